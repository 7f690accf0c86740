"""The streaming path: image folders too large for memory, decoded per image by a DataLoader.

:func:`folder_loader` returns a :class:`FolderLoader`, a ``DataLoader`` with the interface the
trainer uses for the in-memory :class:`~resnetkit.data.fast.TensorLoader`: ``set_epoch``,
``iterate(start_batch)`` to resume mid-epoch, ``len()`` in batches and ``num_samples``.
Undecodable images never stop training: they are dropped from their batch (so a batch may be
smaller) and counted in :attr:`FolderLoader.skipped`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from resnetkit.data.folder import (
    Failure,
    ImageFolderDataset,
    Skipped,
    collate_skip_bad,
    scan_image_folder,
)
from resnetkit.data.images import DEFAULT_MAX_PIXELS
from resnetkit.data.sampling import RepeatedAugmentationSampler

__all__ = ["FolderLoader", "collate_counting", "folder_loader"]


def collate_counting(batch: Sequence[Any]) -> tuple[Any, list[Failure]]:
    """``collate_skip_bad`` plus the dropped items' files and reasons, which survive worker
    processes (a dataset's own ``failures`` list stays in the process that decoded)."""
    skipped = [(item.path, item.reason) for item in batch if isinstance(item, Skipped)]
    skipped += [(Path("?"), "undecodable") for item in batch if item is None]
    return collate_skip_bad(batch), skipped


class _ResumableSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` for the images of ``base``, skipping the first ``start`` once
    (mid-epoch resume).

    Each image's random transforms are seeded by its position in the epoch, not drawn from
    the stream of whichever process decodes it: after a resume the remaining batches go to
    the worker processes in another order, and the same image must still get the same crop.
    ``start`` is consumed by the next pass, whenever the DataLoader begins reading indices
    (at once with workers, at the first batch without).
    """

    def __init__(self, base: Sampler[int]) -> None:
        self.base = base
        self.start = 0
        self.epoch_seed = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.start = self.start, 0
        picked = itertools.islice(iter(self.base), start, None)
        for position, index in enumerate(picked, start):
            yield index, (self.epoch_seed * 1_000_033 + position) % (1 << 63)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]


class _SeededItems(Dataset[Any]):
    """``dataset[index]`` with the torch RNG seeded by the sampler's ``seed`` for that image;
    the process's own RNG state is put back afterwards (it also drives the training step
    when there are no worker processes)."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class FolderLoader(DataLoader[Any]):
    """A DataLoader over an :class:`ImageFolderDataset` that skips and counts bad images.

    Iterating yields ``(images, labels)`` as collated by
    :func:`~resnetkit.data.folder.collate_skip_bad`; a batch whose images were all bad is not
    yielded at all (see :meth:`iterate`). After (or during) a pass, :attr:`skipped` is the
    number of undecodable images met in that pass; it is reset when a new pass starts, and
    :attr:`failures` names the files. Both are kept in the main process from what the collate
    function reports, so they are right with worker processes too.

    Shuffling is seeded by ``(seed, epoch)``: the same epoch always visits images in the same
    order, and :meth:`iterate` can resume from a batch without decoding the skipped ones.
    Random per-image transforms are seeded by ``(seed, epoch, rank)`` and the image's position
    in the epoch, whichever process decodes it: a resumed pass crops and flips as the
    uninterrupted one would have, with worker processes too.

    Attributes:
        skipped: Undecodable images met in the current (or last) pass.
        failures: Every undecodable file met so far, with the reason (all passes, all
            worker processes), in the order they were met.
        epoch: The epoch set by :meth:`set_epoch`.
    """

    def __init__(
        self,
        dataset: ImageFolderDataset,
        batch_size: int,
        *,
        train: bool,
        num_workers: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        drop_last: bool | None = None,
        pin_memory: bool = False,
        repetitions: int = 1,
    ) -> None:
        drop_last = train if drop_last is None else drop_last
        generator = torch.Generator()
        base: Sampler[int]
        if train and repetitions > 1:
            base = RepeatedAugmentationSampler(
                len(dataset), repetitions, rank=rank, world_size=world_size, seed=seed
            )
        elif world_size > 1:
            # Evaluation shards are padded with repeated images to an equal length per rank.
            base = DistributedSampler(
                dataset,
                num_replicas=world_size,
                rank=rank,
                shuffle=train,
                seed=seed,
                drop_last=train,
            )
        elif train:
            base = RandomSampler(dataset, generator=generator)
        else:
            base = SequentialSampler(dataset)
        self.seed = seed
        self.rank = rank
        self.epoch = epoch
        self.skipped = 0
        self.failures: dict[Path, str] = {}
        self._sampler = _ResumableSampler(base)
        dataset.name_failures = True
        super().__init__(
            _SeededItems(dataset),
            batch_size=batch_size,
            sampler=self._sampler,
            num_workers=num_workers,
            collate_fn=collate_counting,
            pin_memory=pin_memory,
            drop_last=drop_last,
            generator=generator,
            persistent_workers=False,
        )
        self._generator = generator

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle (and worker seeds) the next pass uses."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Images this process visits per epoch (before bad ones are dropped)."""
        return len(self._sampler)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self.iterate()

    def iterate(self, start_batch: int = 0, keep_empty: bool = False) -> Iterator[Any]:
        """Yield the good ``(images, labels)`` batches of the epoch, from batch ``start_batch``.

        Batches before ``start_batch`` are skipped without being decoded. A batch whose every
        image is bad is left out, or with ``keep_empty`` yielded as ``None``, so that a caller
        that counts batches to resume (the trainer) counts the same positions as ``start_batch``.
        """
        # The generator shuffles (single process) and seeds the workers; the rank is mixed in
        # so that ranks do not draw identical augmentations for their different images.
        epoch_seed = (self.seed * 1_000_003 + self.epoch) * 8_191 + self.rank
        self._generator.manual_seed(epoch_seed)
        self._sampler.epoch_seed = epoch_seed
        base = self._sampler.base
        if isinstance(base, (DistributedSampler, RepeatedAugmentationSampler)):
            base.set_epoch(self.epoch)
        self._sampler.start = start_batch * self.batch_size  # type: ignore[operator]
        self.skipped = 0
        for batch, skipped in super().__iter__():
            self.skipped += len(skipped)
            for path, reason in skipped:
                self.failures.setdefault(path, reason)
            if batch is not None or keep_empty:
                yield batch


def folder_loader(
    root_or_samples: str | Path | Sequence[tuple[str | Path, int]],
    classes: Sequence[str] | None,
    transform: Callable[[Image.Image], Any] | None,
    batch_size: int,
    *,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    drop_last: bool | None = None,
    pin_memory: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shorter_side: int | None = None,
    repetitions: int = 1,
) -> FolderLoader:
    """A DataLoader over an image folder (or a list of samples) that never crashes on bad files.

    Example::

        loader = folder_loader("data/train", None, build_train_transform(224, mean, std,
                               augment="imagenet"), 256, train=True, num_workers=8)
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for x, y in loader:
                ...
            print(f"{loader.skipped} undecodable images skipped")

    Args:
        root_or_samples: A class-per-folder root (scanned with
            :func:`~resnetkit.data.folder.scan_image_folder`), or ``(path, label)`` pairs,
            e.g. one side of :func:`~resnetkit.data.folder.split_samples`.
        classes: Class names; required with samples. With a root, ``None`` takes them from
            the sub-folders, and names given must match those.
        transform: Applied to each RGB ``PIL.Image`` (e.g. :func:`build_train_transform`).
        batch_size: Images per batch and process, before bad ones are dropped.
        train: Shuffle (seeded by ``(seed, epoch)``) and drop the last incomplete batch.
        num_workers: Decoding processes; 0 decodes in the main process.
        seed: Base seed of the shuffle and of the worker processes.
        rank: This process's index when distributed.
        world_size: Number of processes; above 1 a ``DistributedSampler`` shards the data.
        epoch: Initial epoch (see :meth:`FolderLoader.set_epoch`).
        drop_last: Override the default (``train``).
        pin_memory: Pin batches for faster host-to-GPU copies.
        max_pixels: Largest accepted ``width * height``; larger images are skipped.
        shorter_side: What ``transform`` resizes the shorter side to, if it does (evaluation):
            JPEGs then decode at a reduced scale, and thin images that would grow past
            ``max_pixels`` are skipped (see :func:`~resnetkit.data.images.load_image`).
        repetitions: Repeated augmentation when training: each image taken this many times
            in a row, each copy transformed on its own, the epoch keeping its length
            (:class:`~resnetkit.data.sampling.RepeatedAugmentationSampler`). 1: off.

    Returns:
        A :class:`FolderLoader`.

    Raises:
        ValueError: If samples are given without ``classes``, or the class folders of a root
            differ from the ``classes`` given.
    """
    if isinstance(root_or_samples, (str, Path)):
        samples, found = scan_image_folder(root_or_samples)
        if classes is not None and tuple(classes) != found:
            raise ValueError(
                f"{root_or_samples}: class folders {list(found)} do not match the classes "
                f"given {list(classes)}; pass classes=None to use the folders"
            )
        dataset = ImageFolderDataset(
            root_or_samples,
            transform=transform,
            samples=samples,
            classes=found,
            max_pixels=max_pixels,
            shorter_side=shorter_side,
        )
    else:
        if classes is None:
            raise ValueError("folder_loader: give the class names along with explicit samples")
        dataset = ImageFolderDataset(
            None,
            transform=transform,
            samples=root_or_samples,
            classes=classes,
            max_pixels=max_pixels,
            shorter_side=shorter_side,
        )
    return FolderLoader(
        dataset,
        batch_size,
        train=train,
        num_workers=num_workers,
        seed=seed,
        rank=rank,
        world_size=world_size,
        epoch=epoch,
        drop_last=drop_last,
        pin_memory=pin_memory,
        repetitions=repetitions,
    )
