"""Evaluation: accuracy, per-class accuracy, confusion matrices, 10-crop testing."""
