"""Data set readers, the synthetic default, transforms and the prepared cache."""
