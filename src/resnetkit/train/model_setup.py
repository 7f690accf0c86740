"""The model a run trains, fitted to its data: a given model's head matched to the data's
classes, and the first stages frozen as the recipe says."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from resnetkit.models.loading import preprocessing_of
from resnetkit.models.resnet import ResNet


def fit_head(model: ResNet, classes: Sequence[str], new_head: bool) -> None:
    """A classifier for ``classes``: the model's own when it predicts the same classes (by
    name under ``new_head``: CIFAR's class 3 is not a folder's class 3; the same names in
    another order keep their rows, reordered), else a fresh one."""
    wanted = list(classes)
    if model.num_classes != len(wanted):
        model.reset_classifier(len(wanted))
        return
    if not new_head:
        return
    own = [str(c) for c in preprocessing_of(model)["classes"]]
    if own == wanted:
        return
    if sorted(own) == sorted(wanted) and len(set(own)) == len(own):
        order = [own.index(name) for name in wanted]  # the same classes, in another order
        head = model.fc
        assert isinstance(head, nn.Linear)
        with torch.no_grad():
            head.weight.copy_(head.weight[order].clone())
            if head.bias is not None:
                head.bias.copy_(head.bias[order].clone())
        return
    model.reset_classifier(len(wanted))


def freeze_stages(model: ResNet, k: int) -> list[nn.Module]:
    """Stop the stem and the first ``k`` residual stages learning; returns their BatchNorms,
    which the training loop keeps in eval mode.

    Raises:
        ValueError: ``k`` outside 0..the number of stages.
    """
    if k < 0 or k > len(model.stages):
        raise ValueError(f"freeze_stages must be 0..{len(model.stages)}, got {k}")
    if k == 0:
        return []
    frozen: list[nn.Module] = [model.conv1]
    if model.bn1 is not None:
        frozen.append(model.bn1)
    frozen += model.stages[:k]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    # Frozen means frozen: their BatchNorms keep the statistics they came with too (as
    # FrozenBatchNorm does in torchvision's detection backbones).
    return [
        m for f in frozen for m in f.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
