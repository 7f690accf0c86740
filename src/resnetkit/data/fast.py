"""A fast path for small datasets: the whole set as one uint8 tensor, augmented in batch.

No per-image Python and no worker processes (the airbench approach): each epoch draws its
permutation, crops and flips up front from a generator seeded by ``(seed, epoch)``, so a run
that resumes in the middle of an epoch sees exactly the batches it would have seen. On a GPU
the whole set can live on the device (:meth:`TensorLoader.to`): the random draws stay on the
CPU generator (the same batches as on a CPU), and each step sends only its indices and crop
offsets, from pinned memory, so that preparing a batch never waits for the GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from resnetkit.data.sampling import check_shard, training_shard


@dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become network inputs.

    ``pixel_mean`` (the 2015 paper's "per-pixel mean subtracted", a (3, H, W) image in [0, 1])
    takes precedence over the per-channel ``mean``/``std``.
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    pixel_mean: Tensor | None = None
    # The statistics as tensors on each device they were used on: built once, since a copy to
    # a GPU from ordinary memory would wait for the GPU at every batch.
    _on: dict[torch.device, tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.pixel_mean is None and len(self.mean) != len(self.std):
            raise ValueError(f"{len(self.mean)} mean values but {len(self.std)} std values")

    def check_channels(self, channels: int, what: str) -> None:
        """Refuse per-channel statistics that do not fit ``channels``-channel ``what`` (one
        value serves every channel; a per-pixel mean is checked where it is subtracted)."""
        if self.pixel_mean is not None:
            return
        if len(self.mean) not in (1, channels):
            raise ValueError(
                f"normalization has {len(self.mean)} values per statistic for {channels}-channel "
                f"{what}: give 1 or {channels}"
            )

    def stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(subtrahend, divisor) on ``device``, broadcastable over (B, C, H, W): the
        normalised input is ``(pixels / 255 - subtrahend) / divisor``."""
        if device not in self._on:
            if self.pixel_mean is not None:
                sub, div = self.pixel_mean.float(), torch.ones(())
            else:
                sub = torch.tensor(self.mean).view(1, -1, 1, 1)
                div = torch.tensor(self.std).view(1, -1, 1, 1)
            self._on[device] = (send(sub, device), send(div, device))
        return self._on[device]

    def apply(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) -> normalised float32."""
        x = images.float().div_(255.0)
        sub, div = self.stats(x.device)
        if self.pixel_mean is not None:
            return x.sub_(sub)
        return x.sub_(sub).div_(div)


def to_nchw_tensor(images: np.ndarray) -> Tensor:
    """(N, H, W, 3) uint8 numpy -> contiguous (N, 3, H, W) uint8 tensor."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def send(tensor: Tensor, device: torch.device) -> Tensor:
    """A CPU tensor to ``device`` without waiting for the device: from pinned memory on a GPU
    (a copy from ordinary memory first waits for the work queued before it)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device, non_blocking=device.type != "cpu")


def random_crop_flip(images: Tensor, pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Pad by ``pad`` zeros, take a random crop of the original size, flip half horizontally.

    Works on a whole uint8 batch with one gather; the paper's CIFAR augmentation. The offsets
    are drawn from the CPU ``generator`` wherever ``images`` are, so a batch on a GPU is the
    batch on the CPU.
    """
    b, c, h, w = images.shape
    device = images.device
    if pad > 0:
        images = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flipped = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    if device.type != "cpu":  # one small copy for all three
        oy, ox, flipped = send(torch.stack([oy, ox, flipped.long()]), device).unbind(0)
        flipped = flipped.bool()
    rows = (oy[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = ox[:, None] + torch.arange(w, device=device)
    if flip:
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :]
    batch = torch.arange(b, device=device)[:, None, None, None]
    chans = torch.arange(c, device=device)[None, :, None, None]
    return images[batch, chans, rows, cols]


class TensorLoader:
    """Batches from an in-memory uint8 tensor, augmented on the fly in batch.

    Args:
        images: (N, 3, H, W) uint8.
        labels: (N,) int64.
        batch_size: samples per batch (per process when distributed).
        normalization: how pixels are normalised.
        train: shuffle and augment (crop + flip); otherwise fixed order, no augmentation.
        pad: padding of the random crop (4 in the paper).
        drop_last: drop the last incomplete batch (training).
        seed: base seed; epoch ``e`` uses ``seed * 1_000_003 + e``.
        rank, world_size: shard of the data this process sees (DDP).
        channels_last: return batches in channels-last memory format.
        uint8_augment: extra batch augmentation on uint8 images after crop and flip
            (e.g. :func:`resnetkit.data.transforms.batch_trivial_augment`).
        float_augment: batch augmentation on the normalised floats (e.g. random erasing).
        sample_weights: draw each epoch's samples with replacement in proportion to these
            weights (class balancing) instead of a permutation.
        repetitions: repeated augmentation: each image of the epoch's order taken this many
            times in a row, each copy cropped and flipped on its own; the epoch keeps its
            length (see :func:`resnetkit.data.sampling.training_shard`). 1: off.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        normalization: Normalization,
        *,
        train: bool,
        pad: int = 4,
        flip: bool = True,
        drop_last: bool | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        uint8_augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        float_augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        sample_weights: Tensor | None = None,
        repetitions: int = 1,
    ) -> None:
        if not isinstance(images, Tensor):
            raise TypeError(
                f"images must be a torch tensor, got {type(images).__name__}: convert CIFAR's "
                "(N, H, W, C) arrays with resnetkit.data.fast.to_nchw_tensor"
            )
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
            raise ValueError(
                f"images of shape {tuple(images.shape)} look like (N, H, W, C): convert them "
                "with resnetkit.data.fast.to_nchw_tensor"
            )
        normalization.check_channels(images.shape[1], "images")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if sample_weights is not None and len(sample_weights) != len(images):
            raise ValueError(
                f"{len(sample_weights)} sample_weights for {len(images)} images: give one each"
            )
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.normalization = normalization
        self.train = train
        self.pad = pad
        self.flip = flip
        self.drop_last = train if drop_last is None else drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.uint8_augment = uint8_augment if train else None
        self.float_augment = float_augment if train else None
        self.sample_weights = sample_weights
        self.repetitions = repetitions
        check_shard(rank, world_size, repetitions)
        self.epoch = 0

    @property
    def device(self) -> torch.device:
        """Where the data and the batches are (the CPU unless :meth:`to` moved them)."""
        return self.images.device

    def to(self, device: torch.device | str, max_fraction: float = 0.25) -> bool:
        """Keep the data on ``device`` (a GPU) and prepare every batch there: gather, crop,
        flip and normalise, with the random draws still made on the CPU, so the batches are the
        ones a CPU would make. Data taking more than ``max_fraction`` of the device's free memory
        stays here. Returns whether it moved."""
        device = torch.device(device)
        if device.type == "cpu" or device == self.device:
            return device == self.device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if self.images.nbytes + self.labels.nbytes > max_fraction * free:
                return False
        self.images = self.images.to(device)
        self.labels = self.labels.to(device)
        return True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor:
        n = len(self.images)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            if self.sample_weights is not None:
                order = torch.multinomial(self.sample_weights, n, replacement=True, generator=g)
            else:
                order = torch.randperm(n, generator=g)
            return training_shard(order, self.rank, self.world_size, self.repetitions)
        return torch.arange(n)[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self._indices())

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iterate()

    def iterate(
        self, start_batch: int = 0, keep_empty: bool = False
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (inputs, labels) batches, skipping the first ``start_batch`` (resume).

        ``keep_empty`` is accepted for the same interface as the folder loader's; tensors are
        never undecodable, so no batch is ever empty.
        """
        indices = self._indices()
        if self.device.type != "cpu":
            indices = send(indices, self.device)  # one copy for the epoch
        # Each process its own crops and flips (the same on every process would make a global
        # batch of N processes hold N copies of each draw); process 0's stream is the
        # single-process one.
        base = (self.seed * 1_000_003 + self.epoch) * 7 + 1
        g = torch.Generator().manual_seed(base + self.rank * 998_244_353)
        for i in range(len(self)):
            idx = indices[i * self.batch_size : (i + 1) * self.batch_size]
            # Draw the augmentation even for skipped batches, so that a resumed epoch
            # continues with the same random stream as an uninterrupted one.
            images = self.images[idx]
            if self.train and (self.pad > 0 or self.flip):
                images = random_crop_flip(images, self.pad, self.flip, g)
            if self.uint8_augment is not None:
                images = self.uint8_augment(images, g)
            if i < start_batch and self.float_augment is None:
                continue
            x = self.normalization.apply(images)
            if self.float_augment is not None:
                x = self.float_augment(x, g)
            if i < start_batch:
                continue
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
