"""Repeated augmentation: the epoch's shards, in memory and streamed."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from resnetkit.data.fast import Normalization, TensorLoader
from resnetkit.data.sampling import RepeatedAugmentationSampler, training_shard
from resnetkit.data.streaming import folder_loader
from resnetkit.data.transforms import build_train_transform
from resnetkit.train.recipe import Recipe


def torchvision_ra(order: list[int], rank: int, world: int, reps: int) -> list[int]:
    """torchvision's RASampler (references/classification/sampler.py) after its shuffle,
    without the rounding of the epoch to a multiple of 256 images."""
    num_samples = -(-len(order) * reps // world)
    total = num_samples * world
    indices = [i for i in order for _ in range(reps)]
    indices += indices[: total - len(indices)]
    return indices[rank:total:world][: len(order) // world]


@pytest.mark.parametrize(("world", "reps"), [(1, 1), (1, 4), (2, 3), (3, 1), (8, 4), (5, 7)])
def test_training_shard_deals_copies_as_torchvisions_ra_sampler(world: int, reps: int) -> None:
    order = torch.randperm(101, generator=torch.Generator().manual_seed(world * 10 + reps))
    shards = [training_shard(order, rank, world, reps) for rank in range(world)]
    for rank, shard in enumerate(shards):
        assert shard.tolist() == torchvision_ra(order.tolist(), rank, world, reps)
        assert len(shard) == 101 // world  # the epoch keeps its length
        if reps == 1:
            assert shard.tolist() == order[rank::world][: 101 // world].tolist()
    if world == 1 and reps > 1:  # one process: each image reps times in a row
        head = shards[0][: 100 // reps * reps].view(-1, reps)
        assert (head == head[:, :1]).all() and len(set(head[:, 0].tolist())) == len(head)
    if world == 8 and reps == 4:  # an image's 4 copies go to 4 different processes
        owners: dict[int, list[int]] = {}
        for rank, shard in enumerate(shards):
            for index in shard[:8].tolist():
                owners.setdefault(index, []).append(rank)
        assert all(len(set(ranks)) == len(ranks) for ranks in owners.values())
        assert sorted(len(ranks) for ranks in owners.values())[-1] == 4


def test_training_shard_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="repetitions is 0"):
        training_shard(torch.arange(4), 0, 1, 0)
    with pytest.raises(ValueError, match=r"rank 2 is outside \[0, 2\)"):
        training_shard(torch.arange(4), 2, 2, 1)
    with pytest.raises(ValueError, match="'repeated_augment' is 0"):
        Recipe(repeated_augment=0)
    assert Recipe().override({"repeated-augment": "4"}).repeated_augment == 4


def test_sampler_shares_one_shuffle_across_processes_and_epochs_differ() -> None:
    samplers = [RepeatedAugmentationSampler(40, 4, rank=r, world_size=4, seed=3) for r in range(4)]
    first = [list(s) for s in samplers]
    assert all(len(s) == 10 == len(shard) for s, shard in zip(samplers, first, strict=True))
    # The same permutation everywhere: together the processes hold each of its first 10
    # images 4 times, one copy each.
    together = sorted(i for shard in first for i in shard)
    assert len(set(together)) == 10 and all(together.count(i) == 4 for i in set(together))
    assert list(samplers[0]) == first[0]  # the same epoch again: the same order
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != first[0]


def test_in_memory_copies_get_their_own_crops() -> None:
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(16)
    loader = TensorLoader(
        images,
        labels,
        8,
        Normalization((0.5,) * 3, (0.25,) * 3),
        train=True,
        pad=2,
        seed=1,
        repetitions=4,
    )
    assert len(loader) == 2 and loader.num_samples == 16  # the epoch keeps its length
    batches = list(loader)
    seen = torch.cat([y for _, y in batches])
    assert len(set(seen.tolist())) == 4  # a quarter of the images, each 4 times in a row
    for x, y in batches:
        groups, crops = y.view(2, 4), x.view(2, 4, 3, 8, 8)
        assert (groups == groups[:, :1]).all()
        for copies in crops:  # four crops and flips of one image, not four equal tensors
            assert len({tuple(c.flatten().tolist()) for c in copies}) > 1
    # A resumed epoch picks up the same batches.
    again = list(loader.iterate(start_batch=1))
    assert torch.equal(again[0][0], batches[1][0]) and torch.equal(again[0][1], batches[1][1])


def test_streamed_copies_get_their_own_crops(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    transform = build_train_transform(16, (0.5,) * 3, (0.25,) * 3, augment="imagenet")
    loader = folder_loader(tmp_path, None, transform, 4, train=True, seed=2, repetitions=2)
    assert loader.num_samples == 12 and len(loader) == 3
    batches = list(loader)
    for x, y in batches:
        assert y[0] == y[1] and y[2] == y[3]
        assert not torch.equal(x[0], x[1]) and not torch.equal(x[2], x[3])
    resumed = list(loader.iterate(start_batch=2))
    assert len(resumed) == 1 and torch.equal(resumed[0][0], batches[2][0])
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], batches[0][0])


def test_trivial_augment_is_bilinear_on_full_size_crops() -> None:
    def mode(augment: str) -> v2.InterpolationMode:
        steps = build_train_transform(
            32, (0.5,) * 3, (0.25,) * 3, augment=augment, trivial_augment=True
        ).transforms
        (ta,) = [t for t in steps if isinstance(t, v2.TrivialAugmentWide)]
        return ta.interpolation

    assert mode("imagenet") == mode("scale") == v2.InterpolationMode.BILINEAR
    assert mode("crop_flip") == v2.InterpolationMode.NEAREST  # as the in-memory batches
