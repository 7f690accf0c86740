"""resnetkit: deep residual networks, exact to the papers, fast and dependable."""

from resnetkit.models import ResNet, ResNetConfig, UnknownModelError, create_model, list_models

# Binding the function here (not lazily) also makes ``resnetkit.predict`` the function even after
# the submodule of the same name is imported. The submodule defers its heavy imports.
from resnetkit.predict import predict

__version__ = "0.1.0"

__all__ = [
    "ResNet",
    "ResNetConfig",
    "UnknownModelError",
    "__version__",
    "create_model",
    "list_models",
    "predict",
]
