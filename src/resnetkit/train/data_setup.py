"""The data side of a training run: loaders, classes, normalisation, the model's preprocessing.

Two paths, chosen by the recipe:

- In memory (CIFAR, and image folders with ``augment: crop_flip`` or ``none``): every image is
  decoded once at the training size into one uint8 tensor, and :class:`TensorLoader` crops,
  flips and augments whole batches on tensors.
- ``augment: auto`` is one of these two, chosen by the input size (:func:`resolve_augment`).
- Streaming (image folders with ``augment: imagenet`` or ``scale``): images stay on disk and a
  :class:`FolderLoader` decodes them per epoch, so that every epoch draws new random-resized
  (or scale-augmented) crops from the full-resolution picture, and folders larger than memory
  train too. Evaluation
  resizes the shorter side to ``size / 0.875`` and takes the center crop, as for ImageNet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from resnetkit.data.cifar import ArrayDataset
from resnetkit.data.datasets import FOLDER_VAL_SPLIT, load_train_eval
from resnetkit.data.fast import Normalization, TensorLoader, to_nchw_tensor
from resnetkit.data.multilabel import is_multi_label_file, label_sets, positive_weights
from resnetkit.data.transforms import (
    FULL_SIZE_AUGMENTS,
    batch_pca_lighting,
    batch_random_erasing,
    batch_trivial_augment,
)
from resnetkit.train.recipe import Recipe

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Loader(Protocol):
    """What the trainer needs of a loader (TensorLoader and FolderLoader both are)."""

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def iterate(self, start_batch: int = 0, keep_empty: bool = False) -> Any: ...


def inverse_frequency(labels: Tensor, num_classes: int) -> Tensor:
    """One weight per class, inversely proportional to its count in ``labels``, mean 1."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    return (counts.sum() / counts.clamp(min=1) / num_classes).float()


@dataclass
class TrainData:
    """Loaders and what the run records about its data."""

    classes: list[str]
    train_labels: Tensor  # int64, one per training image (class weights, counts)
    train_loader: Loader
    eval_loaders: dict[str, Any]  # "val" and/or "test"
    eval_counts: dict[str, int]
    norm: Normalization
    preprocessing: dict[str, Any]  # what the saved model directory says about its input
    # the side of the training crops (preprocessing's input_size is evaluation's, which a
    # recipe's eval_image_size may make larger)
    train_size: int = 32
    streaming: bool = False
    augment: str = "crop_flip"  # what the run's augment (``auto`` included) resolved to
    # Multi-label data (see resnetkit.data.multilabel): labels index label sets, and the
    # targets of labels ``y`` are ``label_table[y]`` (sets, classes); None for one class each.
    label_table: Tensor | None = None

    @property
    def multi_label(self) -> bool:
        return self.label_table is not None

    def class_weights(self) -> Tensor:
        """Inverse class frequencies of the training set, normalised to mean 1; multi-label:
        each class's negatives over positives (the ``pos_weight`` of binary cross-entropy)."""
        if self.label_table is not None:
            return positive_weights(self.label_table[self.train_labels])
        return inverse_frequency(self.train_labels, len(self.classes))

    def skipped_images(self) -> int:
        """Undecodable images met by the training loader in its current (or last) pass."""
        return int(getattr(self.train_loader, "skipped", 0))


def build_train_data(
    *,
    dataset: str,
    data_dir: Path,
    recipe: Recipe,
    per_rank_batch: int,
    image_size: int,
    rank: int = 0,
    world_size: int = 1,
    download: bool = False,
    train_subset: int = 0,
    eval_subset: int = 0,
    normalization: Normalization | None = None,
    pin_memory: bool = False,
) -> TrainData:
    """The in-memory or streaming data of a run (see the module docstring). A multi-label
    label file gives its label sets as labels, and the table that makes them targets."""
    pixel_mean = isinstance(normalization, Normalization) and normalization.pixel_mean is not None
    recipe = resolve_augment(recipe, image_size, dataset, pixel_mean=pixel_mean)
    multi_label = dataset == "folder" and is_multi_label_file(data_dir)
    if multi_label and recipe.class_balance == "sampler":
        raise ValueError(
            f"{data_dir} lists several classes an image: class_balance 'sampler' draws images "
            "by their one class; use class_balance 'loss' (each class's positives weighted by "
            "its negatives over positives)"
        )
    data: TrainData
    if recipe.augment in FULL_SIZE_AUGMENTS:
        if dataset != "folder":
            raise ValueError(
                f"augment {recipe.augment!r} (crops from full-size pictures) is for image "
                f"folders; {dataset} images are 32x32: use crop_flip"
            )
        data = _streaming(
            data_dir,
            recipe,
            per_rank_batch,
            image_size,
            rank,
            world_size,
            normalization,
            subsets=(train_subset, eval_subset),
            pin_memory=pin_memory,
        )
    else:
        data = _in_memory(
            dataset=dataset,
            data_dir=data_dir,
            recipe=recipe,
            per_rank_batch=per_rank_batch,
            image_size=image_size,
            rank=rank,
            world_size=world_size,
            download=download,
            train_subset=train_subset,
            eval_subset=eval_subset,
            normalization=normalization,
        )
    if multi_label:
        data.classes, data.label_table = label_sets(data.classes)
    return data


#: ``augment: auto`` streams random-resized crops from this input side up (ImageNet-sized
#: models), and keeps smaller ones in memory with the paper's pad-and-crop.
AUTO_FULL_SIZE_FROM = 128


def resolve_augment(
    recipe: Recipe, image_size: int, dataset: str = "folder", *, pixel_mean: bool = False
) -> Recipe:
    """``augment: auto`` (the fine-tuning recipe's) made concrete for one run: ``imagenet``
    (random-resized crops streamed from the full pictures) for a folder at 128 pixels or more,
    as torchvision's, timm's and Hugging Face's fine-tuning recipes do for ImageNet-sized
    models; otherwise ``crop_flip`` (pad 4, random crop, flip; CIFAR-sized inputs). A run
    that needs the whole set in memory (``class_balance: sampler``, ``normalize: pixel_mean``,
    or a model that subtracts a per-pixel mean, ``pixel_mean``) also gets ``crop_flip``. Any
    other augment is returned as it is."""
    if recipe.augment != "auto":
        return recipe
    streamable = (
        recipe.class_balance != "sampler" and recipe.normalize != "pixel_mean" and not pixel_mean
    )
    big = dataset == "folder" and image_size >= AUTO_FULL_SIZE_FROM
    return recipe.override({"augment": "imagenet" if big and streamable else "crop_flip"})


def _in_memory(
    *,
    dataset: str,
    data_dir: Path,
    recipe: Recipe,
    per_rank_batch: int,
    image_size: int,
    rank: int,
    world_size: int,
    download: bool,
    train_subset: int,
    eval_subset: int,
    normalization: Normalization | None,
) -> TrainData:
    if recipe.eval_image_size or recipe.eval_resize:
        given = "eval_image_size" if recipe.eval_image_size else "eval_resize"
        raise ValueError(
            f"recipe field {given!r} is for crops streamed from full-size pictures (augment "
            f"imagenet or scale); with augment {recipe.augment!r} the images are held in memory "
            "at one side, trained and evaluated alike: leave it at 0"
            + (", or use --augment imagenet" if dataset == "folder" else "")
        )
    data = load_train_eval(
        dataset,
        data_dir,
        val_split=recipe.val_split,
        image_size=image_size,
        download=download,
        train_subset=train_subset,
        eval_subset=eval_subset,
        seed=recipe.seed,
    )
    train_images = to_nchw_tensor(data.train.images)
    # A pretrained model's own normalization (fine-tuning) wins over the recipe's.
    if isinstance(normalization, Normalization):
        norm = normalization
        size = train_images.shape[-2:]
        if norm.pixel_mean is not None and norm.pixel_mean.shape[-2:] != size:
            raise ValueError(
                f"the model subtracts a per-pixel mean of {tuple(norm.pixel_mean.shape[-2:])} "
                f"pixels, the images are {tuple(size)}: use --image-size "
                f"{norm.pixel_mean.shape[-1]}"
            )
    elif recipe.normalize == "pixel_mean":
        norm = Normalization(pixel_mean=train_images.float().mean(0) / 255.0)
    else:
        norm = Normalization(tuple(data.mean), tuple(data.std))
    labels = torch.from_numpy(data.train.labels)
    classes = list(data.train.classes)
    sample_weights = None
    if recipe.class_balance == "sampler":
        sample_weights = inverse_frequency(labels, len(classes))[labels]
    train_loader = TensorLoader(
        train_images,
        labels,
        per_rank_batch,
        norm,
        train=True,
        pad=recipe.crop_padding if recipe.augment == "crop_flip" else 0,
        flip=recipe.augment != "none",
        seed=recipe.seed,
        rank=rank,
        world_size=world_size,
        channels_last=recipe.channels_last,
        uint8_augment=batch_trivial_augment if recipe.trivial_augment else None,
        float_augment=_float_augment(recipe, norm),
        sample_weights=sample_weights,
        repetitions=recipe.repeated_augment,
    )
    return TrainData(
        classes=classes,
        train_labels=labels,
        train_loader=train_loader,
        eval_loaders={
            name: _eval_tensor_loader(split, norm, recipe.channels_last)
            for name, split in data.evals.items()
        },
        eval_counts={name: len(split.labels) for name, split in data.evals.items()},
        norm=norm,
        preprocessing=_preprocessing(data.input_size, data.input_size, norm),
        train_size=data.input_size,
        augment=recipe.augment,
    )


def _float_augment(
    recipe: Recipe, norm: Normalization
) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    """The in-memory path's augmentation of normalised batches: PCA lighting, then random
    erasing (erased pixels become the mean), or ``None`` when the recipe asks for neither."""
    lighting, erasing = recipe.lighting, recipe.random_erasing
    if not lighting and not erasing:
        return None
    divisor = (1.0,) * 3 if norm.pixel_mean is not None else norm.std

    def augment(x: Tensor, g: torch.Generator) -> Tensor:
        if lighting:
            x = batch_pca_lighting(x, lighting, g, divisor)
        if erasing:
            x = batch_random_erasing(x, erasing, g)
        return x

    return augment


def _eval_tensor_loader(split: ArrayDataset, norm: Normalization, channels_last: bool) -> Any:
    return TensorLoader(
        to_nchw_tensor(split.images),
        torch.from_numpy(split.labels),
        256,
        norm,
        train=False,
        channels_last=channels_last,
    )


def _streaming(
    root: Path,
    recipe: Recipe,
    per_rank_batch: int,
    image_size: int,
    rank: int,
    world_size: int,
    normalization: Normalization | None,
    subsets: tuple[int, int] = (0, 0),
    pin_memory: bool = False,
) -> TrainData:
    from resnetkit.data.datasets import subset_order
    from resnetkit.data.folder import folder_splits
    from resnetkit.data.streaming import folder_loader
    from resnetkit.data.transforms import build_eval_transform, from_recipe

    if recipe.normalize == "pixel_mean":
        raise ValueError(
            "normalize 'pixel_mean' needs the whole training set in memory; with augment "
            f"{recipe.augment!r} (streamed from disk) use mean_std"
        )
    if recipe.class_balance == "sampler":
        raise ValueError(
            "class_balance 'sampler' is not available when streaming a folder (augment "
            f"{recipe.augment!r}); use class_balance 'loss' (inverse-frequency weights in the loss)"
        )
    if recipe.val_split:
        raise ValueError(FOLDER_VAL_SPLIT)
    eval_size, resize = eval_sizes(recipe, image_size)  # refused before the folder is read
    train_samples, val_samples, classes = folder_splits(root, 0.1, recipe.seed)
    # the same fixed random draws as the in-memory path (--train-subset, eval_subset)
    train_samples = [
        train_samples[i] for i in subset_order(len(train_samples), subsets[0], recipe.seed)
    ]
    val_samples = [val_samples[i] for i in subset_order(len(val_samples), subsets[1], recipe.seed)]
    if normalization is not None and normalization.pixel_mean is not None:
        raise ValueError(
            "the model subtracts a per-pixel mean (it was trained with normalize "
            "pixel_mean), which crops streamed from full-size pictures cannot follow: use "
            "--augment crop_flip"
        )
    norm = normalization or Normalization(tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    train_loader = folder_loader(
        train_samples,
        classes,
        from_recipe(recipe, image_size, norm.mean, norm.std),
        per_rank_batch,
        train=True,
        num_workers=recipe.num_workers,
        seed=recipe.seed,
        rank=rank,
        world_size=world_size,
        pin_memory=pin_memory,  # a GPU copies pinned batches without waiting
        repetitions=recipe.repeated_augment,
    )
    eval_loaders: dict[str, Any] = {}
    if val_samples:
        eval_loaders["val"] = folder_loader(
            val_samples,
            classes,
            build_eval_transform(eval_size, norm.mean, norm.std, resize=resize),
            256,
            train=False,
            num_workers=recipe.num_workers,
            shorter_side=resize,
        )
    return TrainData(
        classes=list(classes),
        train_labels=torch.tensor([label for _, label in train_samples], dtype=torch.int64),
        train_loader=train_loader,
        eval_loaders=eval_loaders,
        eval_counts={"val": len(val_samples)} if val_samples else {},
        norm=norm,
        preprocessing=_preprocessing(eval_size, resize, norm),
        train_size=image_size,
        streaming=True,
        augment=recipe.augment,
    )


def default_image_size(recipe: Recipe) -> int:
    """A run's training side without --image-size: the recipe's ``train_image_size``, else
    224 for crops from full-size pictures (the papers'), else 32 (the CIFAR-style path)."""
    from resnetkit.data.transforms import FULL_SIZE_AUGMENTS

    if recipe.train_image_size:
        return recipe.train_image_size
    return 224 if recipe.augment in FULL_SIZE_AUGMENTS else 32


def eval_sizes(recipe: Recipe, image_size: int) -> tuple[int, int]:
    """The side of a streamed run's evaluation crops and the shorter side they are cut from:
    the recipe's ``eval_image_size`` and ``eval_resize``, or the training side and
    ``side / 0.875`` (256 for 224; no margin below 128 pixels)."""
    from resnetkit.data.transforms import default_resize

    size = recipe.eval_image_size or image_size
    margin = default_resize(size)
    resize = recipe.eval_resize or margin
    if resize < size:
        where = "--eval-image-size" if recipe.eval_image_size else "--image-size"
        raise ValueError(
            f"recipe field 'eval_resize' is {resize}, smaller than the {size}-pixel evaluation "
            f"crop ({where}) cut from it: give --eval-resize {size} or more (0: {margin}), or "
            f"a smaller {where}"
        )
    return size, resize


def training_side(recipe: Recipe, dataset: str, image_size: int | None) -> int:
    """The side a run trains at: ``image_size`` (``--image-size``), else the recipe's
    ``train_image_size``, else :func:`default_image_size`; CIFAR's images are 32x32, and
    another side asked for them is refused, not ignored."""
    if dataset == "folder":
        return image_size or default_image_size(recipe)
    given = image_size or recipe.train_image_size
    if given and given != 32:
        what = "--image-size" if image_size else "recipe field 'train_image_size'"
        raise ValueError(
            f"{what} is {given}, and {dataset} images are 32x32: the side is for image "
            "folders (--dataset folder); "
            + ("leave it out" if image_size else "pass --image-size 32")
        )
    return 32


def _preprocessing(size: int, resize: int, norm: Normalization) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_size": size,
        "resize": resize,
        "crop": size,
        "interpolation": "bilinear",
        "mean": list(norm.mean),
        "std": list(norm.std),
    }
    if norm.pixel_mean is not None:
        out["pixel_mean"] = norm.pixel_mean.flatten().tolist()
    return out
