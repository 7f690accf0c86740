"""resnetkit: deep residual networks, exact to the papers, fast and dependable."""

from resnetkit.models import ResNet, ResNetConfig, UnknownModelError, create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "ResNet",
    "ResNetConfig",
    "UnknownModelError",
    "__version__",
    "create_model",
    "list_models",
]
