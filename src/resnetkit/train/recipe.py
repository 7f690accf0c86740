"""Training recipes: typed, with their source, stored as YAML files in ``resnetkit/recipes``."""

from __future__ import annotations

import difflib
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from resnetkit.text import plural, what_it_takes

#: The largest image side accepted anywhere (a ResNet at 100,000 pixels would ask for 120 GB
#: an image).
MAX_IMAGE_SIDE = 4096

#: Augmentations of one image (see :func:`resnetkit.data.transforms.build_train_transform`).
AUGMENTS = ("crop_flip", "imagenet", "scale", "none")
#: What a recipe may ask for: those, or ``auto`` (chosen by the input size, for fine-tuning).
AUGMENT_CHOICES = (*AUGMENTS, "auto")


def check_scale_range(scale_range: tuple[int, ...] | list[int]) -> None:
    """Two shorter sides, ``0 < low <= high``, for 224-pixel crops.

    Raises:
        ValueError: anything else.
    """
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(
            f"'scale_range' is {list(scale_range)}: two shorter sides, low <= high, for "
            "224-pixel crops (the paper's 256,480)"
        )


@dataclass(frozen=True)
class Recipe:
    """Every knob of a training run. Iteration-based fields override epoch-based ones."""

    name: str = "custom"
    source: str = ""  # the paper or reference the numbers come from
    epochs: int = 10
    max_iters: int = 0  # stop after this many iterations (the paper's 64k); 0: use epochs
    batch_size: int = 128  # global batch (split across processes)
    lr: float = 0.1  # peak learning rate for batch_size
    # sgd (with momentum, as the papers) | adamw (Loshchilov & Hutter 2019, betas 0.9/0.999;
    # momentum and nesterov are SGD's and go unused)
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    # False: no weight decay on BatchNorm weights and on biases (every 1-D parameter), as
    # torchvision's --norm-weight-decay 0 and timm's default filter do
    decay_norm_and_bias: bool = True
    schedule: str = "multistep"  # multistep | cosine | onecycle (linear up, linear down)
    milestones: tuple[int, ...] = ()  # iterations where multistep divides lr by `gamma`
    gamma: float = 0.1
    warmup_iters: int = 0  # iterations at warmup_lr (constant, the paper) or ramping (onecycle)
    warmup_lr: float = 0.0  # constant lr during warm-up (0.01 for ResNet-110 in the paper)
    label_smoothing: float = 0.0
    val_split: int = 0  # hold this many training images out for validation (45k/5k)
    normalize: str = "mean_std"  # mean_std | pixel_mean (the 2015 paper)
    # crop_flip (paper CIFAR) | imagenet (random-resized crop) | scale (paper ImageNet) | none
    # | auto (imagenet for folders at 128 pixels or more, else crop_flip: fine-tuning)
    augment: str = "crop_flip"
    # scale: the shorter side drawn from [low, high] for 224-pixel crops (scaled for others)
    scale_range: tuple[int, ...] = (256, 480)
    lighting: float = 0.0  # std of AlexNet's PCA colour noise (0.1 in the ImageNet papers)
    crop_padding: int = 4
    # The side of the training images (crops, for the full-size augments): --image-size wins
    # over it; 0: 224 for the full-size augments, else 32 (fine-tuning: the model's own side).
    train_image_size: int = 0
    # Evaluation (and the saved model's input) at another side than training's crops, for the
    # full-size augments (Touvron et al. 2019, FixRes: random-resized crops make objects look
    # bigger than a centre crop of the same side does, so testing larger helps; torchvision's
    # recipe trains at 176 and tests at 224). 0: the training side. eval_resize: the shorter
    # side before the centre crop; 0: side / 0.875 (256 for 224) from 128 pixels up, else the
    # side itself.
    eval_image_size: int = 0
    eval_resize: int = 0
    trivial_augment: bool = False
    # Repeated augmentation (Hoffer et al. 2020; the RA sampler of DeiT and torchvision's
    # recipe): each image of an epoch taken this many times in a row, each copy augmented on
    # its own, the epoch keeping its length (so it visits 1/N of the images). 1: off.
    repeated_augment: int = 1
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float = 0.0  # 0 disables the exponential moving average of weights
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    accum_steps: int = 1  # gradient accumulation
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 only on GPU, with loss scaling)
    channels_last: bool = True
    compile: bool = False
    # default | reduce-overhead (CUDA graphs: for small models on a GPU) | max-autotune | ...
    compile_mode: str = "default"
    sync_bn: bool = False
    seed: int = 0
    deterministic: bool = False
    eval_every: int = 1  # epochs between evaluations
    # also checkpoint in mid-epoch after this many seconds (0: after every step)
    checkpoint_every_s: float = 300.0
    checkpoint_every_iters: int = 0  # and/or every this many iterations; 0 disables
    num_threads: int = 0  # torch intra-op threads; 0 keeps the default
    num_workers: int = 0  # decoding processes of the streaming folder path (augment imagenet/scale)
    # Fine-tuning and model selection.
    backbone_lr_mult: float = 1.0  # lr of everything but the classifier head, relative to lr
    freeze_stages: int = 0  # freeze the stem and the first K residual stages
    freeze_bn: bool = False  # keep every BatchNorm in eval mode (running statistics frozen)
    class_balance: str = "none"  # none | loss (inverse-frequency weights) | sampler
    select_best: bool = False  # export the weights with the best validation top-1
    early_stop_patience: int = 0  # stop after this many evaluations without improvement
    # Knowledge distillation (Hinton et al. 2015): a trained model (directory, tag or Hub name)
    # whose softened answers the student learns from too; "" trains on the labels alone.
    teacher: str = ""
    distill_alpha: float = 0.9  # weight of the teacher's term; the labels' gets 1 - alpha
    distill_temperature: float = 4.0  # T: both nets' logits divided by it (soft term x T^2)

    def __post_init__(self) -> None:
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("multistep", "cosine", "onecycle"),
            "normalize": ("mean_std", "pixel_mean"),
            "augment": AUGMENT_CHOICES,
            "precision": ("fp32", "bf16", "fp16"),
            "class_balance": ("none", "loss", "sampler"),
            "compile_mode": (
                "default",
                "reduce-overhead",
                "max-autotune",
                "max-autotune-no-cudagraphs",
            ),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"recipe field {key!r} is {getattr(self, key)!r}; choose one of {allowed}"
                )
        for key in ("batch_size", "epochs", "accum_steps"):
            if getattr(self, key) <= 0:
                raise ValueError(
                    f"recipe field {key!r} is {getattr(self, key)}: it must be at least 1"
                )
        if self.repeated_augment < 1:
            raise ValueError(
                f"recipe field 'repeated_augment' is {self.repeated_augment}: the copies of "
                "each image in a row, 1 (off) or more (torchvision's recipe takes 4)"
            )
        if self.eval_every <= 0:
            raise ValueError(f"eval_every is {self.eval_every}: evaluate every N >= 1 epochs")
        finite = (
            "lr",
            "momentum",
            "weight_decay",
            "gamma",
            "warmup_lr",
            "label_smoothing",
            "random_erasing",
            "lighting",
            "mixup_alpha",
            "cutmix_alpha",
            "ema_decay",
            "grad_clip",
            "checkpoint_every_s",
            "backbone_lr_mult",
            "distill_alpha",
            "distill_temperature",
        )
        for key in finite:
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"recipe field {key!r} is {value}: it must be a number >= 0")
        counts = (
            "max_iters",
            "warmup_iters",
            "val_split",
            "crop_padding",
            "train_image_size",
            "eval_image_size",
            "eval_resize",
            "checkpoint_every_iters",
            "num_threads",
            "num_workers",
            "freeze_stages",
            "early_stop_patience",
        )
        for key in counts:
            if getattr(self, key) < 0:
                raise ValueError(f"recipe field {key!r} is {getattr(self, key)}: it must be >= 0")
        below_one = ("momentum", "ema_decay", "label_smoothing")  # 1 would freeze or erase
        for key in below_one:
            if getattr(self, key) >= 1:
                raise ValueError(
                    f"recipe field {key!r} is {getattr(self, key)}: it must be in [0, 1)"
                )
        if self.distill_alpha > 1:
            raise ValueError(
                f"recipe field 'distill_alpha' is {self.distill_alpha}: the teacher's share of "
                "the loss, in [0, 1] (0.9 in the usual CIFAR setting)"
            )
        if self.teacher and self.distill_temperature == 0:
            raise ValueError(
                "recipe field 'distill_temperature' is 0: the logits are divided by it; give "
                "a temperature > 0 (4 is usual; 1 is the plain softmax)"
            )
        if self.eval_image_size and self.eval_resize and self.eval_resize < self.eval_image_size:
            raise ValueError(
                f"recipe field 'eval_resize' is {self.eval_resize}, smaller than the "
                f"{self.eval_image_size}-pixel evaluation crop (eval_image_size) cut from it: "
                f"give --eval-resize {self.eval_image_size} or more, or 0 (the default)"
            )
        for key in ("train_image_size", "eval_image_size", "eval_resize"):
            if getattr(self, key) > MAX_IMAGE_SIDE:
                raise ValueError(
                    f"recipe field {key!r} is {getattr(self, key)}: at most {MAX_IMAGE_SIDE} pixels"
                )
        if self.crop_padding > 64:
            raise ValueError(
                f"recipe field 'crop_padding' is {self.crop_padding}: random crops from images "
                "padded by that much would be mostly padding; the paper pads 4"
            )
        if self.random_erasing > 1:
            raise ValueError(
                f"recipe field 'random_erasing' is {self.random_erasing}: a probability, in [0, 1]"
            )
        try:
            check_scale_range(self.scale_range)
        except ValueError as err:
            raise ValueError(f"recipe field {err}") from None
        if any(m <= 0 for m in self.milestones):
            raise ValueError(f"milestones {list(self.milestones)} must be positive iterations")
        if self.warmup_lr and self.lr == 0:  # the warm-up is a fraction of lr
            raise ValueError(
                f"recipe fields 'lr' 0 and 'warmup_lr' {self.warmup_lr}: a warm-up above the "
                "lr it leads to; give lr > 0, or warmup_lr 0"
            )
        if self.schedule == "multistep" and not 0 < self.gamma <= 1:
            raise ValueError(
                f"recipe field 'gamma' is {self.gamma}: the factor multistep multiplies the lr "
                "by at each milestone, in (0, 1] (the paper's 0.1 divides it by 10)"
            )
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(
                f"recipe field 'nesterov' is true with optimizer {self.optimizer!r}: Nesterov "
                "momentum is SGD's; give --nesterov false, or --optimizer sgd"
            )
        if self.nesterov and self.momentum == 0:  # torch refuses it only at the first step
            raise ValueError(
                "recipe field 'nesterov' is true and 'momentum' 0: Nesterov momentum needs a "
                "momentum; give --momentum > 0, or --nesterov false"
            )
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"recipe field 'seed' is {self.seed}: it must be in [0, 2**32)")
        if self.warmup_lr and self.schedule != "multistep":
            raise ValueError(
                f"recipe field 'warmup_lr' ({self.warmup_lr}) is the paper's constant warm-up of "
                f"the multistep schedule; {self.schedule} ramps up linearly over warmup_iters: "
                "leave warmup_lr at 0"
            )
        if self.warmup_lr and not self.warmup_iters:  # the warm-up would last no step
            raise ValueError(
                f"recipe field 'warmup_lr' ({self.warmup_lr}) is the lr of the first "
                "warmup_iters iterations, and warmup_iters is 0: give --warmup-iters too"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["milestones"] = list(self.milestones)
        data["scale_range"] = list(self.scale_range)
        return data

    def override(self, changes: dict[str, Any]) -> Recipe:
        """A copy with some fields changed; values given as strings are parsed to the field type."""
        if not isinstance(changes, Mapping):
            raise TypeError(
                f"override takes a dict of fields, such as {{'lr': 0.1}}, got {changes!r}"
            )
        known = {f.name: f for f in fields(self)}
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            key = key.replace("-", "_")
            if key not in known:
                # "learning_rate" as other toolkits name it
                close = difflib.get_close_matches(
                    key.lower().replace("learning_rate", "lr"), known, n=3, cutoff=0.6
                )
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ValueError(f"unknown recipe field {key!r}.{hint} Fields: {', '.join(known)}")
            parsed[key] = _parse(value, getattr(self, key), key)
        if parsed.get("optimizer", "sgd") != "sgd" and "nesterov" not in parsed:
            parsed["nesterov"] = False  # the recipe's SGD setting, not asked for with AdamW
        return replace(self, **parsed)


#: Fields a resumed run may change: they decide speed and logging, not the weights (a run
#: compiled on a GPU can go on without compiling elsewhere; the precision is not among them).
RESUMABLE_CHANGES = frozenset(
    {
        "num_threads",
        "num_workers",
        "checkpoint_every_s",
        "checkpoint_every_iters",
        "eval_every",
        "compile",
        "compile_mode",
        "channels_last",
        # a teacher found under another path (a moved folder, a relative path from elsewhere)
        # may go on: its weights' digest, one of the run's facts, says whether it is the same
        "teacher",
        # the side that trained, written into every run's recipe (0 in runs from before it):
        # the run's facts (train_size) refuse another
        "train_image_size",
    }
)


#: Fields added after runs were saved without them, with the value those runs trained with.
ADDED_FIELDS: dict[str, Any] = {
    "optimizer": "sgd",
    "decay_norm_and_bias": True,
    "scale_range": [256, 480],
    "lighting": 0.0,
    "teacher": "",
    "train_image_size": 0,
    "eval_image_size": 0,
    "eval_resize": 0,
}


def recipe_differences(saved: dict[str, Any], current: Recipe) -> list[str]:
    """``field: saved -> current`` for each field (outside :data:`RESUMABLE_CHANGES`) where a
    run's saved recipe and ``current`` differ; fields the saved recipe lacks are skipped,
    except those of :data:`ADDED_FIELDS`, which such a run trained with as they say."""
    saved = {**ADDED_FIELDS, **saved}
    now = current.to_dict()
    return [
        f"{key}: {saved[key]!r} -> {now[key]!r}"
        for key in now
        if key in saved and key not in RESUMABLE_CHANGES and key != "name"
        if _comparable(saved[key]) != _comparable(now[key])
    ]


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _parse(value: Any, current: Any, key: str) -> Any:
    if not isinstance(value, str):  # from YAML: check the type instead of parsing
        return _check_type(value, current, key)
    try:
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(current, int):
            if "e" not in value.lower():
                return int(value)
            number = float(value)  # 64e3
            if not number.is_integer():  # also inf and nan
                raise ValueError
            return int(number)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"recipe field {key!r}: cannot read {value!r} as {_kind(current)}"
        ) from None
    return value


def _kind(current: Any, typed: bool = True) -> str:
    """What a field of ``current``'s type takes, in words (``int`` means little to a student
    who typed ``--val-split 0.1``): as typed on a command line, or as YAML gives it."""
    words = what_it_takes(type(current))
    if isinstance(current, tuple):
        return f"{words}, e.g. 32000,48000" if typed else "a list of whole numbers"
    return words


def _check_type(value: Any, current: Any, key: str) -> Any:
    def wrong() -> ValueError:
        return ValueError(
            f"recipe field {key!r}: {value!r} is not {_kind(current, typed=False)} "
            f"(like its default, {current!r})"
        )

    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise wrong()
        return value
    if isinstance(current, int):
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, float) and value.is_integer():  # 64e3 read by YAML as a float
            return int(value)
        if not isinstance(value, int):
            raise wrong()
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        return float(value)
    if isinstance(current, tuple):
        items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(items, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in items
        ):
            raise wrong()
        return tuple(items)
    if isinstance(current, str) and not isinstance(value, str):
        raise wrong()
    return value


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped with resnetkit."""
    folder = resources.files("resnetkit.recipes")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def as_recipe(recipe: Recipe | str | Path) -> Recipe:
    """``recipe`` itself, or the built-in recipe or YAML file it names (for the library
    functions that take a recipe: ``TrainSpec``, ``finetune``)."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str | os.PathLike):
        return load_recipe(recipe)
    raise TypeError(
        f"recipe must be a Recipe, a built-in recipe's name or a YAML path, got "
        f"{type(recipe).__name__}"
    )


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """A built-in recipe by name (``paper-cifar``) or a YAML file path, with ``overrides``
    (field: value, strings parsed) applied before the whole is checked: an override may fix
    what the file alone would not pass (``warmup_lr`` in the file, ``--warmup-iters`` given)."""
    data, origin = recipe_source(name_or_path)
    return build_recipe(data, origin, overrides)


def build_recipe(
    data: dict[str, Any], origin: str, overrides: dict[str, Any] | None = None
) -> Recipe:
    """:func:`load_recipe` of a recipe's fields ``data`` read from ``origin`` (a file, or the
    copy a run's checkpoint keeps), named in its errors."""
    overrides = dict(overrides or {})
    keys = {k.replace("-", "_") for k in overrides}
    switched = {v for k, v in overrides.items() if k.replace("-", "_") == "optimizer"}
    if switched and "nesterov" not in keys and str(switched.pop()).lower() != "sgd":
        data = {**data, "nesterov": False}  # the file's SGD setting, not asked for with AdamW
    try:
        return Recipe().override({**data, **overrides})
    except ValueError as err:
        # A value given on the command line is named as it was given, not blamed on the file.
        given = [k for k in overrides if f"'{k.replace('-', '_')}'" in str(err)]
        where = f"--{given[0].replace('_', '-')} {overrides[given[0]]}" if given else origin
        raise ValueError(f"{where}: {err}") from None


def recipe_source(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """A recipe's fields as its file holds them (unchecked), and where it comes from."""
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(
                f"recipe file not found: {path} (built-in recipes: {', '.join(builtin_recipes())})"
            )
        text = path.read_text()
        origin = str(path)
    else:
        candidate = resources.files("resnetkit.recipes").joinpath(f"{name_or_path}.yaml")
        if not candidate.is_file():
            raise ValueError(
                f"unknown recipe {str(name_or_path)!r}: not a YAML file and not one of "
                f"{', '.join(builtin_recipes())}"
            )
        text = candidate.read_text()
        origin = f"resnetkit/recipes/{name_or_path}.yaml"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f", line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{origin}{line}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: a recipe must be a mapping of field: value")
    return data, origin


def check_run_length(recipe: Recipe, total_iters: int) -> None:
    """Refuse a warm-up or an EMA longer than the run (a recipe made for 50k images run on a
    1k-image folder): the lr would never come down, the exported weights would be mostly the
    initial ones. Both problems and their fixes are named at once."""
    problems, fixes = [], []
    if recipe.warmup_iters and recipe.warmup_iters >= total_iters:
        problems.append(
            f"warmup_iters {recipe.warmup_iters} is not shorter than the run: the lr would only "
            "ever rise"
        )
        tenth = total_iters // 10
        fixes.append(f"--warmup-iters {tenth} ({'a tenth of the run' if tenth else 'none'})")
    if recipe.ema_decay > 0 and recipe.ema_decay**total_iters > 0.5:
        window = round(1 / (1 - recipe.ema_decay))
        problems.append(
            f"ema_decay {recipe.ema_decay} averages over about {plural(window, 'iteration')}: the "
            f"exported weights would still be {100 * recipe.ema_decay**total_iters:.0f}% the "
            "initial ones"
        )
        fixes.append(f"--ema-decay {math.exp(-3 / total_iters):.4g} (or 0)")
    late = [m for m in recipe.milestones if m >= total_iters]
    if recipe.schedule == "multistep" and late and not problems:
        at = sorted({total_iters // 2, total_iters * 3 // 4} - {0})  # the paper's 50% and 75%
        warnings.warn(
            f"milestones {late} are not before the run's end "
            f"({plural(total_iters, 'iteration')}): the lr is never divided there. The recipe "
            "was made for a longer run; pass --milestones (e.g. --milestones "
            f"{','.join(map(str, at))}) to place them in this one",
            stacklevel=3,
        )
    if problems:
        raise ValueError(
            f"the run has {plural(total_iters, 'iteration')}; "
            + "; ".join(problems)
            + ". Pass "
            + " and ".join(fixes)
            + ", or train longer"
        )
