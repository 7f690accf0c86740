"""Weights from everywhere: torchvision, timm, Hugging Face, Keras and training-script
checkpoints in, with mismatches explained; torchvision, timm, Hugging Face and Keras out."""

from resnetkit.interop.convert import (
    Checkpoint,
    CheckpointMismatchError,
    LoadReport,
    ShapeMismatch,
    adapt_input_conv,
    convert_checkpoint,
    load_checkpoint,
    read_checkpoint,
)
from resnetkit.interop.formats import SOURCE_FORMATS, detect_format, to_resnetkit_names
from resnetkit.interop.writers import (
    huggingface_config,
    to_huggingface,
    to_keras_dict,
    to_timm,
    to_torchvision,
)

__all__ = [
    "SOURCE_FORMATS",
    "Checkpoint",
    "CheckpointMismatchError",
    "LoadReport",
    "ShapeMismatch",
    "adapt_input_conv",
    "convert_checkpoint",
    "detect_format",
    "huggingface_config",
    "load_checkpoint",
    "read_checkpoint",
    "to_huggingface",
    "to_keras_dict",
    "to_resnetkit_names",
    "to_timm",
    "to_torchvision",
]
