"""resnetkit: deep residual networks, exact to the papers, fast and dependable."""

from typing import TYPE_CHECKING, Any

from resnetkit.models import ResNet, ResNetConfig, UnknownModelError, create_model, list_models

# Binding the function here (not lazily) also makes ``resnetkit.predict`` the function even after
# the submodule of the same name is imported. The submodule defers its heavy imports.
from resnetkit.predict import predict

if TYPE_CHECKING:
    from resnetkit.interop.convert import load_checkpoint

__version__ = "0.1.0"

__all__ = [
    "ResNet",
    "ResNetConfig",
    "UnknownModelError",
    "__version__",
    "create_model",
    "list_models",
    "load_checkpoint",
    "predict",
]


def __getattr__(name: str) -> Any:
    # Interop is imported on first use, not with the package.
    if name == "load_checkpoint":
        from resnetkit.interop.convert import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'resnetkit' has no attribute {name!r}")
