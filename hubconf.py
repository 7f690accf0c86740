"""torch.hub entry points: every resnetkit architecture by name, and ``create_model`` for tags.

    model = torch.hub.load("OWNER/resnetkit", "resnet20", pretrained=True)   # from GitHub
    model = torch.hub.load("path/to/resnetkit", "resnet56", source="local", pretrained=True)
    model = torch.hub.load(REPO, "create_model", "resnet20.paper_cifar10", pretrained=True)
    torch.hub.list("OWNER/resnetkit")   # the architectures (GitHub only, as torch.hub.help)

Each entry is ``resnetkit.create_model(name, pretrained=..., **options)``: with
``pretrained=True`` the architecture's best packaged weights (the CIFAR models' come with the
repository, offline) or torchvision's published ImageNet weights.
"""

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# modules torch.hub checks for first (the project's dependencies, by import name)
dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors", "yaml", "tqdm", "matplotlib"]

if importlib.util.find_spec("resnetkit") is None:  # a checkout torch.hub fetched: not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from resnetkit import create_model, list_models  # noqa: E402


def _entry(name: str) -> Callable[..., Any]:
    def build(pretrained: bool = False, **options: Any) -> Any:
        return create_model(name, pretrained=pretrained, **options)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"resnetkit.create_model({name!r}, pretrained=pretrained, **options); "
        f"`resnetkit info {name}` describes it."
    )
    return build


# torch.hub lists and loads the module's public callables: one per registered architecture.
globals().update({name: _entry(name) for name in list_models()})
