"""Training loop, evaluation, checkpoints, distributed set-up, configuration."""
