"""Augmentation: per-image transforms for image folders, batch transforms for in-memory tensors.

Two paths, one set of recipes:

* :func:`build_train_transform` / :func:`build_eval_transform` return ``torchvision.transforms.v2``
  pipelines for ``PIL`` images (the streaming image-folder path, one image at a time in workers).
* :func:`batch_trivial_augment`, :func:`batch_random_erasing` and :class:`MixCut` work on whole
  batches (the fast in-memory path of :mod:`resnetkit.data.fast`), and draw every random number
  from an explicit ``torch.Generator`` so that a resumed run sees the same augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from resnetkit.data.fast import send
from resnetkit.train.recipe import AUGMENTS, check_scale_range

if TYPE_CHECKING:
    from resnetkit.train.recipe import Recipe

__all__ = [
    "MixCut",
    "MixParams",
    "PCALighting",
    "batch_pca_lighting",
    "batch_random_erasing",
    "batch_trivial_augment",
    "build_eval_transform",
    "build_train_transform",
    "from_recipe",
    "soft_cross_entropy",
]

#: Augmentations that need full-size pictures, decoded per image (the streaming folder path).
FULL_SIZE_AUGMENTS = ("imagenet", "scale")
#: The crop side the 2015 paper's scale range [256, 480] goes with; other sides scale it.
SCALE_REFERENCE = 224

# The eigen-decomposition of ImageNet's RGB pixel covariance (pixels in [0, 1]) used by
# AlexNet's colour augmentation (Krizhevsky et al. 2012), with the values Facebook's
# fb.resnet.torch reimplementation of the ResNet paper ships.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class PCALighting(v2.Transform):
    """AlexNet's colour augmentation ("the standard color augmentation in [21]", He et al.
    2015, Sec. 3.4): add ``eigvec @ (alpha * eigval)`` to every pixel, one
    ``alpha ~ N(0, std^2)`` per principal component, drawn per image from torch's RNG.

    Works on float (C=3, H, W) images in [0, 1] (after ``ToDtype(scale=True)``, before
    normalisation); the result is not clipped, as in AlexNet and fb.resnet.torch.

    Args:
        std: Standard deviation of the component weights (0.1 in AlexNet); 0 does nothing.
    """

    _transformed_types = (torch.Tensor,)

    def __init__(self, std: float = 0.1) -> None:
        super().__init__()
        if not math.isfinite(std) or std < 0:
            raise ValueError(f"PCA lighting std is {std}: it must be a number >= 0")
        self.std = std
        self.eigval = torch.tensor(IMAGENET_PCA_EIGVAL)
        self.eigvec = torch.tensor(IMAGENET_PCA_EIGVEC)

    def shift(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``count`` draws of the per-channel RGB shift, (count, 3)."""
        alpha = torch.randn(count, 3, generator=generator) * self.std
        return (alpha * self.eigval) @ self.eigvec.T

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"shift": self.shift(1)[0]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if self.std == 0:
            return inpt
        if not inpt.is_floating_point() or inpt.dim() != 3 or inpt.shape[0] != 3:
            raise ValueError(
                f"PCA lighting works on float (3, H, W) images in [0, 1], got {inpt.dtype} "
                f"{tuple(inpt.shape)}"
            )
        return inpt + params["shift"].to(inpt.dtype).view(3, 1, 1)

    def extra_repr(self) -> str:
        return f"std={self.std}"


def scale_range_for(scale_range: Sequence[int], image_size: int) -> tuple[int, int]:
    """The shorter-side range of scale augmentation for ``image_size`` crops: the recipe's
    range (given for 224-pixel crops, the paper's [256, 480]) scaled by ``image_size / 224``.

    Raises:
        ValueError: the range is not two sides with ``low <= high``, or its low end would
            be smaller than the crop.
    """
    check_scale_range(tuple(scale_range))
    low, high = (int(round(s * image_size / SCALE_REFERENCE)) for s in scale_range)
    if low < image_size:
        raise ValueError(
            f"scale_range {list(scale_range)} (for 224-pixel crops) resizes the shorter side "
            f"to {low} for {image_size}-pixel crops, smaller than the crop: its low end must "
            f"be at least {SCALE_REFERENCE}"
        )
    return low, high


def build_train_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    augment: str = "crop_flip",
    crop_padding: int = 4,
    trivial_augment: bool = False,
    random_erasing: float = 0.0,
    scale_range: Sequence[int] = (256, 480),
    lighting: float = 0.0,
) -> v2.Compose:
    """The training pipeline for one RGB ``PIL`` image, ending in a normalised float tensor.

    ``augment`` chooses the geometric part:

    * ``crop_flip``: the ResNet paper's CIFAR recipe, pad ``crop_padding`` zeros, take a random
      ``image_size`` crop, flip half the images. Images of another size are first resized
      (shorter side) and center-cropped to ``image_size`` (a no-op for 32x32 CIFAR images).
    * ``imagenet``: ``RandomResizedCrop(image_size)`` (scale 0.08-1) and a horizontal flip
      (Szegedy et al. 2015; torchvision's reference recipe).
    * ``scale``: the ResNet paper's ImageNet recipe (Sec. 3.4): the shorter side resized to a
      random length in ``scale_range`` (uniform over integers; [256, 480] for 224-pixel crops,
      scaled for other sizes, see :func:`scale_range_for`), a random ``image_size`` crop, a
      horizontal flip.
    * ``none``: resize and center-crop only.

    Then, optionally, TrivialAugmentWide; conversion to float32 in [0, 1]; PCA lighting
    (:class:`PCALighting`, when ``lighting > 0``); normalisation; and, optionally, random
    erasing (on the normalised tensor, so erased pixels become the mean).

    Args:
        image_size: Output side length.
        mean: Per-channel mean, in [0, 1] units.
        std: Per-channel standard deviation, in [0, 1] units.
        augment: ``crop_flip``, ``imagenet`` or ``none``.
        crop_padding: Zero padding of the random crop (``crop_flip`` only).
        trivial_augment: Apply TrivialAugmentWide (Mueller & Hutter, 2021), bilinear after
            the full-size crops (``imagenet``, ``scale``; torchvision's reference recipe),
            nearest otherwise (as :func:`batch_trivial_augment`).
        random_erasing: Probability of erasing one random rectangle (Zhong et al., 2017).
        scale_range: Shorter-side range of ``scale`` for 224-pixel crops.
        lighting: Standard deviation of AlexNet's PCA lighting noise (0.1 in the papers).

    Returns:
        A ``v2.Compose`` mapping a ``PIL.Image`` to a (3, image_size, image_size) float32 tensor.

    Raises:
        ValueError: If ``augment`` is unknown, ``random_erasing`` is outside [0, 1], or
            ``scale_range`` does not fit the crop (see :func:`scale_range_for`).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"augment is {augment!r}; choose one of {AUGMENTS}")
    if not 0.0 <= random_erasing <= 1.0:
        raise ValueError(f"random_erasing is a probability, got {random_erasing}")
    steps: list[v2.Transform] = []
    if augment == "imagenet":
        steps += [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    elif augment == "scale":
        low, high = scale_range_for(scale_range, image_size)
        steps += [
            v2.RandomShortestSize(list(range(low, high + 1)), antialias=True),
            v2.RandomCrop(image_size),
            v2.RandomHorizontalFlip(),
        ]
    else:
        steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
        if augment == "crop_flip":
            steps += [v2.RandomCrop(image_size, padding=crop_padding), v2.RandomHorizontalFlip()]
    if trivial_augment:
        # Bilinear for full-size pictures, as torchvision's reference recipe; nearest (the
        # class's default) for the small ones, as the in-memory batch_trivial_augment does.
        full_size = augment in FULL_SIZE_AUGMENTS
        mode = v2.InterpolationMode.BILINEAR if full_size else v2.InterpolationMode.NEAREST
        steps.append(v2.TrivialAugmentWide(interpolation=mode))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if lighting > 0:  # in [0, 1] units, before normalisation
        steps.append(PCALighting(lighting))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)


def default_resize(size: int) -> int:
    """The shorter side a ``size`` evaluation crop is cut from by default: ``size / 0.875``
    (the usual 256 -> 224 for ImageNet) from 128 pixels up, else ``size`` itself (small
    images such as CIFAR are used whole)."""
    return round(size / 0.875) if size >= 128 else size


def build_eval_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    resize: int | None = None,
    crop_pct: float | None = None,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """The deterministic evaluation pipeline: resize the shorter side, center-crop, normalise.

    Args:
        image_size: Output side length (the center crop).
        mean: Per-channel mean, in [0, 1] units.
        std: Per-channel standard deviation, in [0, 1] units.
        resize: Shorter side before cropping; default ``round(image_size / crop_pct)``, or
            :func:`default_resize` without ``crop_pct``.
        crop_pct: Fraction of the resized image kept by the crop.
        interpolation: Resize interpolation: ``bilinear``, ``bicubic``, ``nearest``, ...

    Returns:
        A ``v2.Compose`` mapping a ``PIL.Image`` to a (3, image_size, image_size) float32 tensor.
    """
    if resize is None:
        resize = default_resize(image_size) if crop_pct is None else round(image_size / crop_pct)
    mode = v2.InterpolationMode(interpolation)
    steps: list[v2.Transform] = [
        v2.Resize(resize, interpolation=mode, antialias=True),
        v2.CenterCrop(image_size),
        *_to_normalized_tensor(mean, std),
    ]
    return v2.Compose(steps)


def from_recipe(
    recipe: Recipe, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """:func:`build_train_transform` with the augmentation fields of a recipe."""
    return build_train_transform(
        image_size,
        mean,
        std,
        augment=recipe.augment,
        crop_padding=recipe.crop_padding,
        trivial_augment=recipe.trivial_augment,
        random_erasing=recipe.random_erasing,
        scale_range=recipe.scale_range,
        lighting=recipe.lighting,
    )


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


# --- TrivialAugmentWide on a uint8 batch ------------------------------------------------------
# The operations and magnitude ranges of torchvision's TrivialAugmentWide, in its order. Each
# image draws one operation, one of 31 magnitude bins and (for signed operations) a sign; the
# batch is then processed one operation at a time, with per-image magnitudes as tensors.

_TA_BINS = 31
_TA_OPS: dict[str, tuple[Tensor, bool]] = {
    "Identity": (torch.zeros(_TA_BINS), False),
    "ShearX": (torch.linspace(0.0, 0.99, _TA_BINS), True),
    "ShearY": (torch.linspace(0.0, 0.99, _TA_BINS), True),
    "TranslateX": (torch.linspace(0.0, 32.0, _TA_BINS), True),
    "TranslateY": (torch.linspace(0.0, 32.0, _TA_BINS), True),
    "Rotate": (torch.linspace(0.0, 135.0, _TA_BINS), True),
    "Brightness": (torch.linspace(0.0, 0.99, _TA_BINS), True),
    "Color": (torch.linspace(0.0, 0.99, _TA_BINS), True),
    "Contrast": (torch.linspace(0.0, 0.99, _TA_BINS), True),
    "Sharpness": (torch.linspace(0.0, 0.99, _TA_BINS), True),
    "Posterize": ((8 - torch.arange(_TA_BINS) / ((_TA_BINS - 1) / 6)).round(), False),
    "Solarize": (torch.linspace(1.0, 0.0, _TA_BINS), False),
    "AutoContrast": (torch.zeros(_TA_BINS), False),
    "Equalize": (torch.zeros(_TA_BINS), False),
}
TA_OP_NAMES = tuple(_TA_OPS)
_TA_TABLE = torch.stack([values for values, _ in _TA_OPS.values()]).double()  # (ops, bins)
_TA_SIGNED = torch.tensor([signed for _, signed in _TA_OPS.values()])
_GEOMETRIC_NAMES = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_GEOMETRIC = torch.tensor([TA_OP_NAMES.index(n) for n in _GEOMETRIC_NAMES])
_COLOUR_NAMES = tuple(n for n in TA_OP_NAMES if n not in _GEOMETRIC_NAMES and n != "Identity")


def batch_trivial_augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """TrivialAugmentWide applied independently to every image of a uint8 batch.

    Same operations, magnitudes and (nearest, zero-fill) geometry as ``v2.TrivialAugmentWide``
    on tensors, but vectorised: the five geometric operations share one ``grid_sample`` and
    every colour operation runs once on the images that drew it. Random numbers come from
    ``generator`` (on the CPU), a fixed number per image, so the stream is reproducible.

    Args:
        images: uint8 (B, 3, H, W), on any device.
        generator: CPU generator.

    Returns:
        A new uint8 (B, 3, H, W) tensor.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected a uint8 (B, 3, H, W) batch, got {images.dtype} {tuple(images.shape)}"
        )
    b = images.shape[0]
    ops = torch.randint(len(TA_OP_NAMES), (b,), generator=generator)
    bins = torch.randint(_TA_BINS, (b,), generator=generator)
    negative = torch.rand(b, generator=generator) <= 0.5
    magnitude = _TA_TABLE[ops, bins]
    magnitude = torch.where(_TA_SIGNED[ops] & negative, -magnitude, magnitude)

    out = images.clone()
    groups: list[tuple[str, Tensor]] = [("geometric", torch.isin(ops, _GEOMETRIC))]
    groups += [(name, ops == TA_OP_NAMES.index(name)) for name in _COLOUR_NAMES]
    for name, selected in groups:
        idx = selected.nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        dev_idx = send(idx, images.device)
        if name == "geometric":
            out[dev_idx] = _affine_batch(images[dev_idx], ops[idx], magnitude[idx])
        else:
            m = send(magnitude[idx].float(), images.device).view(-1, 1, 1, 1)
            out[dev_idx] = _colour_op(name, images[dev_idx], m)
    return out


def _colour_op(name: str, x: Tensor, m: Tensor) -> Tensor:
    """One colour operation on uint8 images ``x`` with per-image magnitudes ``m`` (B, 1, 1, 1)."""
    if name == "Posterize":
        bits = m.to(torch.int64)
        mask = ((1 << bits) - 1) << (8 - bits)
        return x & mask.to(torch.uint8)
    if name == "Solarize":
        return torch.where(x >= 255.0 * m, 255 - x, x)
    if name == "AutoContrast":
        return TF.autocontrast(x)
    if name == "Equalize":
        return TF.equalize(x)
    factor = 1.0 + m
    xf = x.float()
    if name == "Brightness":
        return xf.mul(factor).clamp_(0, 255).to(torch.uint8)
    if name == "Sharpness":
        return _sharpness(xf, factor)
    gray = _grayscale(xf)  # Color (saturation) blends with the grey image, Contrast with its mean
    if name == "Contrast":
        gray = gray.mean(dim=(-3, -2, -1), keepdim=True)
    return xf.mul(factor).add_(gray * (1.0 - factor)).clamp_(0, 255).to(torch.uint8)


def _grayscale(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with a 3x3 smoothed image, leaving the one-pixel border as it is (as PIL does)."""
    if x.shape[-1] <= 2 or x.shape[-2] <= 2:
        return x.to(torch.uint8)
    a, c = 1.0 / 13.0, 5.0 / 13.0
    kernel = send(torch.tensor([[a, a, a], [a, c, a], [a, a, a]]), x.device)
    blurred = F.conv2d(x, kernel.expand(3, 1, 3, 3), groups=3).round_()
    inner = x[..., 1:-1, 1:-1]
    inner.add_((blurred - inner).mul_(1.0 - factor))
    return x.clamp_(0, 255).to(torch.uint8)


def _affine_batch(x: Tensor, ops: Tensor, magnitude: Tensor) -> Tensor:
    """Shear, translate or rotate each image (nearest neighbour, zero fill), one grid_sample."""
    b, _, h, w = x.shape

    def where(name: str, value: Tensor) -> Tensor:
        return torch.where(ops == TA_OP_NAMES.index(name), value, 0.0)

    shear = torch.rad2deg(torch.atan(magnitude))
    shear_x, shear_y = where("ShearX", shear), where("ShearY", shear)
    tx, ty = where("TranslateX", magnitude.trunc()), where("TranslateY", magnitude.trunc())
    # torchvision's rotate passes the negated angle (mod 360) to the affine matrix
    angle = where("Rotate", -torch.remainder(magnitude, 360.0))
    # TrivialAugment shears about the top-left corner, translations and rotations the centre
    corner = (ops == TA_OP_NAMES.index("ShearX")) | (ops == TA_OP_NAMES.index("ShearY"))
    cx = torch.where(corner, -0.5 * w, 0.0)
    cy = torch.where(corner, -0.5 * h, 0.0)
    theta = send(_inverse_affine(angle, tx, ty, shear_x, shear_y, cx, cy).float(), x.device)

    # The sampling grid of torchvision's _affine_grid: pixel centres relative to the image
    # centre, mapped by theta, normalised to [-1, 1].
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=x.device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=x.device)
    base = torch.stack(
        [xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=x.device)], dim=-1
    )
    scale = send(torch.tensor([0.5 * w, 0.5 * h]), x.device)
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(theta.transpose(1, 2) / scale)
    out = F.grid_sample(
        x.float(), grid.view(b, h, w, 2), mode="nearest", padding_mode="zeros", align_corners=False
    )
    return out.round_().to(torch.uint8)


def _inverse_affine(
    angle: Tensor, tx: Tensor, ty: Tensor, shear_x: Tensor, shear_y: Tensor, cx: Tensor, cy: Tensor
) -> Tensor:
    """(B, 2, 3) inverse affine matrices, torchvision's ``_get_inverse_affine_matrix`` per row."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


def batch_random_erasing(
    x: Tensor,
    p: float,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
    attempts: int = 10,
) -> Tensor:
    """Random erasing (Zhong et al., 2017) on a normalised float batch, with vectorised masks.

    Each image is erased with probability ``p``: a rectangle covering a ``scale`` fraction of
    the image, with aspect ratio in ``ratio`` (log-uniform), is set to ``value`` (0 = the mean,
    after normalisation). As in ``v2.RandomErasing``, up to ``attempts`` rectangles are drawn and
    the first that fits is used; an image where none fits is left alone.

    Args:
        x: Float (B, C, H, W).
        p: Probability of erasing each image.
        generator: CPU generator; the number of draws does not depend on the outcome.
        scale: Range of the erased area, as a fraction of the image.
        ratio: Range of the rectangle's aspect ratio (height / width).
        value: Value written into the rectangle.
        attempts: Rectangles drawn per image.

    Returns:
        A new tensor; ``x`` is not modified.
    """
    b, _, h, w = x.shape
    erase = torch.rand(b, generator=generator) < p
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, attempts, generator=generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(b, attempts, generator=generator))
    eh = torch.sqrt(area * aspect).round().long()
    ew = torch.sqrt(area / aspect).round().long()
    fits = (eh < h) & (ew < w)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first rectangle that fits
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    erase &= fits.any(dim=1)
    top = (torch.rand(b, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=generator) * (w - ew + 1)).long()
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :]) & erase[:, None, None]
    return x.masked_fill(send(mask[:, None], x.device), value)


def batch_pca_lighting(
    x: Tensor, std: float, generator: torch.Generator, divisor: Sequence[float] = (1.0, 1.0, 1.0)
) -> Tensor:
    """:class:`PCALighting` on a normalised float batch (the in-memory path): each image's RGB
    shift, in [0, 1] pixel units, divided by the normalisation's per-channel ``divisor`` (its
    std; 1 for a per-pixel mean), which is what lighting before normalising would give.

    Args:
        x: Float (B, 3, H, W), already normalised.
        std: Standard deviation of the component weights.
        generator: CPU generator; three normal draws per image.
        divisor: Per-channel std the batch was divided by.

    Returns:
        A new tensor; ``x`` is not modified.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"PCA lighting shifts RGB images; got a batch of shape {tuple(x.shape)}")
    shift = PCALighting(std).shift(x.shape[0], generator) / torch.tensor(divisor)
    return x + send(shift.to(x.dtype), x.device)[:, :, None, None]


# --- MixUp / CutMix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MixParams:
    """One batch's mixing draw: partner permutation, weight and (CutMix) pasted box.

    ``lam`` is the weight of each image's own label, after adjusting CutMix's to the box area.
    ``box`` is ``(top, bottom, left, right)`` in pixels for CutMix, ``None`` for MixUp.
    """

    perm: Tensor
    lam: float
    box: tuple[int, int, int, int] | None = None


class MixCut:
    """MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019) with soft targets.

    When both alphas are positive, each batch uses one of the two with probability 0.5 (as in
    timm and the torchvision reference recipes). Every random number, including the Beta draw,
    comes from the given ``torch.Generator``, so a resumed run mixes identically. Label
    smoothing is folded into the targets, so the loss is :func:`soft_cross_entropy`.

    Args:
        mixup_alpha: Beta(alpha, alpha) concentration for MixUp; 0 disables it.
        cutmix_alpha: Beta(alpha, alpha) concentration for CutMix; 0 disables it.
        num_classes: Length of the target vectors.
        label_smoothing: Mass spread uniformly over all classes, as in ``F.cross_entropy``.
    """

    def __init__(
        self,
        mixup_alpha: float,
        cutmix_alpha: float,
        num_classes: int,
        label_smoothing: float = 0.0,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"alphas must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    @property
    def enabled(self) -> bool:
        """Whether batches are mixed at all (otherwise only targets are made)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def targets(self, y: Tensor) -> Tensor:
        """Class indices (B,) -> smoothed one-hot probabilities (B, num_classes), float32."""
        off = self.label_smoothing / self.num_classes
        t = F.one_hot(y, self.num_classes).float()
        return t.mul_(1.0 - self.label_smoothing).add_(off)

    def sample(
        self, batch_size: int, height: int, width: int, generator: torch.Generator
    ) -> MixParams | None:
        """Draw one batch's mixing parameters; ``None`` when mixing is disabled."""
        if not self.enabled:
            return None
        use_cutmix = self.cutmix_alpha > 0
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(torch.rand((), generator=generator) < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        # torch's Beta sampler takes no generator: seed numpy's from ours instead.
        seed = int(torch.randint(2**62, (), generator=generator))
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
        perm = torch.randperm(batch_size, generator=generator)
        if not use_cutmix:
            return MixParams(perm, lam)
        cut_h, cut_w = int(height * math.sqrt(1.0 - lam)), int(width * math.sqrt(1.0 - lam))
        cy = int(torch.randint(height, (), generator=generator))
        cx = int(torch.randint(width, (), generator=generator))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        return MixParams(perm, lam, (top, bottom, left, right))

    def apply(
        self, x: Tensor, y: Tensor, params: MixParams | None, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mix a batch with given parameters: ``(x_mixed, soft_targets)``; ``x`` is not modified.
        ``targets`` (B, num_classes), when given, are mixed instead of ``y``'s one-hot ones
        (multi-label targets, taken as they are)."""
        t = self.targets(y) if targets is None else targets.float()
        if params is None:
            return x, t
        perm = send(params.perm, x.device)
        t = t.mul(params.lam).add_(t[perm], alpha=1.0 - params.lam)
        if params.box is None:
            return x.mul(params.lam).add_(x[perm], alpha=1.0 - params.lam), t
        top, bottom, left, right = params.box
        mixed = x.clone()
        mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
        return mixed, t

    def __call__(
        self, x: Tensor, y: Tensor, generator: torch.Generator, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mix a float (B, C, H, W) batch with labels (B,) (or ``targets``, see :meth:`apply`);
        returns ``(x_mixed, soft_targets)``."""
        params = self.sample(x.shape[0], x.shape[-2], x.shape[-1], generator)
        return self.apply(x, y, params, targets)


def soft_cross_entropy(logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean cross-entropy against probability targets (B, K), computed in float32.

    ``weight`` (K,) scales each class's term, as ``F.cross_entropy(weight=...)`` does with
    probability targets (inverse-frequency class weights stay in effect under mixup/cutmix).
    """
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
    terms = targets * log_probs
    if weight is not None:
        terms = terms * weight.to(terms.dtype)
    return -terms.sum(dim=-1).mean()
