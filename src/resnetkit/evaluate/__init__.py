"""Evaluation: accuracy, per-class accuracy, confusion matrices, 10-crop testing."""

#: The shorter sides of the paper's multi-scale testing (He et al. 2015, Sec. 3.4). Here, not
#: in the evaluator, so that the command line reads it without importing torch.
PAPER_SCALES = (224, 256, 384, 480, 640)
