"""Learning-rate schedules as a function of the iteration (multiplier of the recipe's lr)."""

from __future__ import annotations

import math
from collections.abc import Callable

from resnetkit.train.recipe import Recipe


def lr_multiplier(recipe: Recipe, total_iters: int) -> Callable[[int], float]:
    """``f(step) -> lr / recipe.lr`` for the recipe's schedule over ``total_iters`` iterations."""
    warmup = recipe.warmup_iters

    if recipe.schedule == "multistep":

        def multistep(step: int) -> float:
            if step < warmup:
                # The paper's constant warm-up (warmup_lr, ResNet-110), else a linear ramp.
                if recipe.warmup_lr > 0:
                    return recipe.warmup_lr / recipe.lr
                return (step + 1) / warmup
            passed = sum(step >= m for m in recipe.milestones)
            return float(recipe.gamma**passed)

        return multistep

    if recipe.schedule == "cosine":

        def cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(total_iters - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        return cosine

    def onecycle(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        return max(0.0, (total_iters - step) / max(total_iters - warmup, 1))

    return onecycle
