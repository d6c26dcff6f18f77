"""Truncated-BPTT training, evaluation, checkpoints and logging."""
