"""The ResNet model zoo."""

from resnetkit.models.config import ResNetConfig
from resnetkit.models.registry import (
    UnknownModelError,
    UnknownWeightsError,
    create_model,
    find_weights,
    get_model_config,
    list_models,
)
from resnetkit.models.resnet import ResNet

__all__ = [
    "ResNet",
    "ResNetConfig",
    "UnknownModelError",
    "UnknownWeightsError",
    "create_model",
    "find_weights",
    "get_model_config",
    "list_models",
]
