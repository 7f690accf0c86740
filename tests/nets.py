"""Helpers for tests that compare networks: BatchNorms that are not the identity."""

from __future__ import annotations

import torch
from torch import nn


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics measured on a random batch, so that a
    swapped or mis-folded BN changes the output (fresh BNs are the identity in eval mode) while
    activations stay O(1). Returns the model, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the stats of this one batch
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.bias.copy_(torch.randn(m.out_features, generator=g))
        chans = int(getattr(getattr(model, "config", None), "in_chans", 3))
        model.train()(torch.randn(2, chans, 64, 64, generator=g))
    for m in norms:
        m.momentum = 0.1
    return model.eval()
