"""resnetkit: deep residual networks, exact to the papers, fast and dependable."""

from typing import TYPE_CHECKING, Any

# Binding the function here (not lazily) also makes ``resnetkit.predict`` the function even after
# the submodule of the same name is imported. The submodule imports torch only when called.
from resnetkit.predict import Preprocessing, predict

if TYPE_CHECKING:
    from resnetkit.interop.convert import load_checkpoint
    from resnetkit.models import (
        ResNet,
        ResNetConfig,
        UnknownModelError,
        UnknownWeightsError,
        create_model,
        find_weights,
        list_models,
    )
    from resnetkit.models.loading import load_model

__version__ = "0.1.0"

__all__ = [
    "Preprocessing",
    "ResNet",
    "ResNetConfig",
    "UnknownModelError",
    "UnknownWeightsError",
    "__version__",
    "create_model",
    "find_weights",
    "list_models",
    "load_checkpoint",
    "load_model",
    "predict",
]

_LAZY = {
    "ResNet": "resnetkit.models",
    "ResNetConfig": "resnetkit.models",
    "UnknownModelError": "resnetkit.models",
    "UnknownWeightsError": "resnetkit.models",
    "create_model": "resnetkit.models",
    "find_weights": "resnetkit.models",
    "list_models": "resnetkit.models",
    "load_checkpoint": "resnetkit.interop.convert",
    "load_model": "resnetkit.models.loading",
}


def __getattr__(name: str) -> Any:
    # torch is imported on first use, not with the package: `resnetkit --help` and the command
    # line's argument checks answer in a fraction of a second.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'resnetkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
