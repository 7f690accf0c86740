"""The names of dataset splits, as folders (``train/``, ``Val/``...) and label-file cells."""

from __future__ import annotations

TRAIN_FOLDERS = ("train", "training")
VALIDATION_FOLDERS = ("val", "valid", "validation")
TEST_FOLDERS = ("test", "testing")
#: Split names, matched whatever their case (``Train/``, ``Validation/``...).
SPLIT_FOLDERS = (*TRAIN_FOLDERS, *VALIDATION_FOLDERS, *TEST_FOLDERS)


def split_names(split: str) -> tuple[str, ...]:
    """The names a split goes by (``val``: val, valid, validation), lower case."""
    for group in (TRAIN_FOLDERS, VALIDATION_FOLDERS, TEST_FOLDERS):
        if split.lower() in group:
            return group
    return (split.lower(),)
