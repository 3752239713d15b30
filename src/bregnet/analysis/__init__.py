"""Gradient-flow study, reports and plots."""
