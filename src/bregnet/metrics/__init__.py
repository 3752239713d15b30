"""Metrics as pure functions of numpy arrays."""
