"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a student learns from a trained
teacher's softened answers as well as from the labels.

The loss of a step is ``(1 - alpha) * hard + alpha * T^2 * soft``: ``hard`` the usual loss
against the labels (cross-entropy, or binary cross-entropy for multi-label data), ``soft`` the
KL divergence from the teacher's to the student's softmax at temperature ``T`` (for
multi-label data, the binary cross-entropy against the teacher's sigmoid at ``T``). ``T^2``
keeps the soft term's gradients at the hard term's scale whatever the temperature (Hinton et
al., Sec. 2).

The teacher sees the student's batches after augmentation (mixup and cutmix included),
mapped from the student's input normalisation to its own, and answers in the student's class
order: a teacher must know every class of the student's (by name, in any order). A teacher
that knows more (an ImageNet-1k model teaching a few of its classes) answers among the
student's classes only: its softmax restricted to them, renormalised.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnetkit.data.fast import Normalization
from resnetkit.text import first_few


def distillation_loss(
    student: Tensor, teacher: Tensor, temperature: float, multi_label: bool = False
) -> Tensor:
    """The soft term, times ``temperature**2``, in float32.

    Args:
        student: the student's logits (images, classes).
        teacher: the teacher's logits for the same images, in the student's class order.
        temperature: ``T`` > 0; both logits are divided by it.
        multi_label: classes scored each on its own (sigmoid) instead of one softmax.

    Returns:
        A scalar: the mean over images of KL(teacher || student) of the softmaxes at ``T``,
        or, multi-label, the mean over images and classes of the KL divergence of each class's
        sigmoid at ``T``; either times ``T**2`` (0 where the two agree).
    """
    s = student.float() / temperature
    t = teacher.float() / temperature
    if multi_label:  # KL of each class's Bernoulli: the cross-entropy less the teacher's entropy
        target = torch.sigmoid(t)
        soft = F.binary_cross_entropy_with_logits(s, target) - F.binary_cross_entropy_with_logits(
            t, target
        )
    else:
        soft = F.kl_div(
            F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="batchmean", log_target=True
        )
    return soft * temperature**2


@dataclass
class Teacher:
    """A frozen model whose answers a student learns from (see :func:`load_teacher`)."""

    model: nn.Module
    name: str
    # Digest of its weights: a run resumed with another teacher under the same name (a model
    # directory trained further) is refused.
    sha256: str
    # x_teacher = x_student * scale + shift; None where both normalise alike.
    scale: Tensor | None = None
    shift: Tensor | None = None
    # the teacher's logit columns in the student's class order; None where they agree
    order: Tensor | None = None
    _on: dict[torch.device, tuple[Tensor | None, ...]] = field(
        default_factory=dict, init=False, repr=False
    )

    def to(self, device: torch.device, channels_last: bool = False) -> Teacher:
        self.model.to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return self

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """The teacher's logits for the student's input batch ``x``, in the student's order."""
        if x.device not in self._on:
            self._on[x.device] = tuple(
                None if t is None else t.to(x.device) for t in (self.scale, self.shift, self.order)
            )
        scale, shift, order = self._on[x.device]
        if scale is not None and shift is not None:
            x = x * scale + shift
        out = self.model(x)
        return out if order is None else out.index_select(1, order)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256}


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and values), in key order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def open_teacher(name: str, out: Path | None = None) -> nn.Module:
    """The model a recipe's ``teacher`` names, loaded before the data is read (a typo costs no
    minutes of loading), in eval mode with its ``pretrained_cfg``.

    Args:
        name: a model directory, a packaged tag (``resnet56.paper_cifar10``) or a Hugging
            Face Hub name, as ``load_model`` takes them.
        out: the run's folder, which the teacher must not be in (the run would overwrite it).

    Raises:
        ValueError: a bare checkpoint file, a folder inside ``out``, or a teacher without a
            classifier head.
        FileNotFoundError: a directory that does not exist.
    """
    from resnetkit.models.hf_hub import is_hf_hub_name
    from resnetkit.models.loading import load_model
    from resnetkit.models.pretrained import list_pretrained

    where = f"teacher {name}"
    path = Path(name).expanduser()
    if path.is_file():
        raise ValueError(
            f"{where} is a checkpoint file, which does not say its architecture, classes and "
            "preprocessing: make a model directory of it first (resnetkit convert FILE --arch "
            "ARCH --out DIR) and name that directory"
        )
    tag_like = "." in name and len(path.parts) == 1  # ARCH.TAG; load_model says which exist
    if not path.exists() and not is_hf_hub_name(name) and not tag_like:
        raise FileNotFoundError(
            f"{where}: no such model directory (nor a weights tag such as "
            f"{', '.join(list_pretrained()[:3])})"
        )
    if out is not None and path.exists():
        run = Path(out).resolve()
        if path.resolve() == run or run in path.resolve().parents:
            raise ValueError(
                f"{where} is inside the run's --out {out}, which the run writes its model to: "
                "copy the teacher elsewhere, or train in another --out"
            )
    with torch.random.fork_rng(devices=[]):  # building it draws weights: not the student's
        model = load_model(name)
    if getattr(model, "features_only", False) or not int(getattr(model, "num_classes", 0) or 0):
        raise ValueError(f"{where} has no classifier head: a teacher answers with class scores")
    return model


def load_teacher(
    name: str,
    *,
    classes: list[str],
    norm: Normalization,
    input_size: int,
    in_chans: int,
    multi_label: bool,
    model: nn.Module | None = None,
) -> Teacher:
    """The teacher a recipe names, checked against the run it teaches.

    Args:
        name: see :func:`open_teacher`.
        classes: the student's classes (the data's), in its order.
        norm: how the student's inputs are normalised.
        input_size: the side of the student's training images.
        in_chans: the student's input channels.
        multi_label: whether the student scores each class on its own.
        model: the teacher :func:`open_teacher` loaded already; None loads ``name``.

    Raises:
        ValueError: as :func:`open_teacher`; also a teacher of another task (multi-label or
            not), one that lacks some of the classes, takes other input channels or subtracts
            a per-pixel mean of another size.
        FileNotFoundError: a directory that does not exist.
    """
    from resnetkit.models.loading import preprocessing_of

    where = f"teacher {name}"
    model = model if model is not None else open_teacher(name)
    pre = preprocessing_of(model)
    heads = int(getattr(model, "num_classes", 0) or 0)
    if bool(pre.get("multi_label")) != multi_label:
        task = (
            "scores each class on its own (multi-label)"
            if pre.get("multi_label")
            else ("picks one class an image (softmax)")
        )
        raise ValueError(
            f"{where} {task}, and the data {'has' if multi_label else 'does not have'} several "
            "classes an image: a teacher must be trained for the same task"
        )
    teacher_chans = int(getattr(getattr(model, "config", None), "in_chans", 3))
    if teacher_chans != in_chans:
        raise ValueError(
            f"{where} takes {teacher_chans}-channel images, the student {in_chans}-channel ones"
        )
    order = _class_order(where, [str(c) for c in pre["classes"]], classes, heads)
    scale, shift = _input_map(where, norm, pre, input_size, in_chans)
    model.eval().requires_grad_(False)
    return Teacher(model, name, weights_digest(model), scale, shift, order)


def _class_order(where: str, teacher: list[str], student: list[str], heads: int) -> Tensor | None:
    """Indices of the student's classes among the teacher's logits (a teacher's classes the
    student lacks are left out); None where identical."""
    if not teacher:  # a checkpoint converted without names: only the count can be checked
        if heads != len(student):
            raise ValueError(
                f"{where} has {heads} classes and no names for them; the data has "
                f"{len(student)}: a teacher must know the student's classes"
            )
        warnings.warn(
            f"{where} does not name its classes: taken to be the data's, in the data's order "
            f"({first_few(student, 5)})",
            stacklevel=3,
        )
        return None
    missing = [c for c in student if c not in teacher]
    if missing:
        extra = [c for c in teacher if c not in student]
        raise ValueError(
            f"{where} does not know the data's classes {', '.join(missing[:5])}"
            + (f" (it knows {', '.join(extra[:5])} instead)" if extra else "")
            + ": a teacher must know every class of the data (by name, in any order)"
        )
    if teacher == student:
        return None
    return torch.tensor([teacher.index(c) for c in student])


def _input_map(
    where: str, norm: Normalization, pre: dict[str, Any], input_size: int, in_chans: int
) -> tuple[Tensor | None, Tensor | None]:
    """(scale, shift) taking the student's normalised inputs to the teacher's."""
    from resnetkit.evaluate.evaluator import model_normalization

    own_size = int(pre["input_size"])
    if pre.get("pixel_mean") is not None and own_size != input_size:
        raise ValueError(
            f"{where} subtracts a per-pixel mean image of {own_size}x{own_size} pixels "
            f"and the student trains at {input_size}: train the student at {own_size} "
            "(--image-size), or use a teacher with a per-channel mean"
        )
    if own_size != input_size:
        warnings.warn(
            f"{where} was trained on {own_size}-pixel images and sees the student's "
            f"{input_size}-pixel ones: its answers may be worse than its accuracy says",
            stacklevel=3,
        )
    cpu = torch.device("cpu")
    sub_s, div_s = norm.stats(cpu)
    sub_t, div_t = model_normalization(pre, in_chans, own_size).stats(cpu)
    if torch.equal(sub_s, sub_t) and torch.equal(div_s, div_t):
        return None, None
    # raw = x * div_s + sub_s; x_t = (raw - sub_t) / div_t
    return div_s / div_t, (sub_s - sub_t) / div_t
