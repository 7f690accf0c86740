"""The ResNet model zoo."""

from resnetkit.models.config import ResNetConfig
from resnetkit.models.registry import (
    UnknownModelError,
    create_model,
    get_model_config,
    list_models,
)
from resnetkit.models.resnet import ResNet

__all__ = [
    "ResNet",
    "ResNetConfig",
    "UnknownModelError",
    "create_model",
    "get_model_config",
    "list_models",
]
