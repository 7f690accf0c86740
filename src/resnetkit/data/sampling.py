"""Which images each training process visits in an epoch, with repeated augmentation.

Repeated augmentation (Hoffer et al. 2020, "Augment your batch"; Berman et al. 2019, the
"RA sampler" of DeiT and of torchvision's recipe for its ResNet-50 V2 weights): every image of
an epoch is taken ``repetitions`` times in a row, each copy augmented on its own, and the epoch
keeps its length, so it visits ``1 / repetitions`` of the images, each several times. Across
processes the copies are dealt out like cards (torchvision's ``RASampler``): with 8 processes
and 4 repetitions, an image's copies go to 4 different processes, where each gets other crops.
One repetition is the ordinary shuffled shard.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler

__all__ = ["RepeatedAugmentationSampler", "check_shard", "training_shard"]


def check_shard(rank: int, world_size: int, repetitions: int) -> None:
    """Raise ``ValueError`` unless ``repetitions >= 1`` and ``0 <= rank < world_size``."""
    if repetitions < 1:
        raise ValueError(f"repetitions is {repetitions}: 1 (off) or more copies of each image")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")


def training_shard(order: Tensor, rank: int, world_size: int, repetitions: int = 1) -> Tensor:
    """The indices process ``rank`` of ``world_size`` trains on in an epoch, in order.

    ``order`` is the epoch's order of the whole dataset (a permutation, or draws with
    replacement), the same on every process. Each entry is repeated ``repetitions`` times in a
    row, the copies are dealt out to the processes in turn, and each process keeps
    ``len(order) // world_size`` of them: the epoch's length does not depend on
    ``repetitions``. With ``repetitions=1`` this is ``order[rank::world_size]``, trimmed to the
    same length on every process.

    Raises:
        ValueError: If ``repetitions`` is below 1 or ``rank`` is outside ``[0, world_size)``.
    """
    check_shard(rank, world_size, repetitions)
    per_rank = len(order) // world_size
    # Only the first entries are dealt: rank r's i-th index is copy (i * world + r) of the
    # repeated order, i.e. entry (i * world + r) // repetitions of ``order``.
    picks = torch.arange(per_rank) * world_size + rank
    return order[torch.div(picks, repetitions, rounding_mode="floor")]


class RepeatedAugmentationSampler(Sampler[int]):
    """A shuffled training shard with repeated augmentation, as an index sampler.

    Every process builds the same permutation of the dataset from ``(seed, epoch)`` and keeps
    its shard of it (:func:`training_shard`). Call :meth:`set_epoch` before each epoch.

    Args:
        num_items: Size of the dataset.
        repetitions: Copies of each image, in a row (1: none).
        rank, world_size: This process and the number of processes.
        seed: Base seed of the shuffle, the same on every process.
    """

    def __init__(
        self, num_items: int, repetitions: int, *, rank: int = 0, world_size: int = 1, seed: int = 0
    ) -> None:
        check_shard(rank, world_size, repetitions)
        self.num_items = num_items
        self.repetitions = repetitions
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=g)
        return iter(training_shard(order, self.rank, self.world_size, self.repetitions).tolist())

    def __len__(self) -> int:
        return self.num_items // self.world_size
