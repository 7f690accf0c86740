"""What probably happened when a checkpoint does not fit a model: other number of classes,
input channels, stem, depth, block type, shortcut option, widths, or stride placement (v1 vs
v1.5, which no shape reveals). Used by :func:`resnetkit.interop.convert.load_checkpoint`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from torch import Tensor

from resnetkit.interop.formats import same_names
from resnetkit.models.config import SKIP_FIELDS, ResNetConfig
from resnetkit.models.registry import get_model_config, list_models
from resnetkit.models.resnet import ResNet

if TYPE_CHECKING:
    from resnetkit.interop.convert import Checkpoint, LoadReport

_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")


def diagnose(
    model: ResNet,
    state: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    report: LoadReport,
    detected: str,
) -> list[str]:
    if not (report.missing or report.unexpected or report.shape_mismatches):
        return []
    if not same_names(detected, report.source_format):
        return [
            f"the names look like {detected}, but were read as {report.source_format}: "
            f"give --from {detected} (source_format={detected!r})"
        ]
    found = [
        _diagnose_head(state, expected),
        _diagnose_in_chans(state, expected),
        _diagnose_stem(state, expected),
        *_diagnose_blocks(model, state, expected),
    ]
    diagnosis = [d for d in found if d]
    explained = {"fc.weight", "fc.bias", "conv1.weight", "conv1.0.weight"}
    others = [s for s in report.shape_mismatches if s.key not in explained]
    if others and not any(d.startswith(_STRUCTURAL) for d in diagnosis):
        diagnosis.append(
            f"other widths: e.g. {others[0]} (stage widths, groups or width_per_group differ: "
            "a ResNeXt or Wide ResNet checkpoint?)"
        )
    if not diagnosis:
        diagnosis.append(
            f"the names do not match ({report.source_format} format): check the architecture "
            "and the source format (--arch, --from)"
        )
    return diagnosis


def _diagnose_head(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str | None:
    ours, theirs = expected.get("fc.weight"), state.get("fc.weight")
    if ours is None and theirs is None:
        return None
    if ours is not None and theirs is not None:
        if ours.shape == theirs.shape:
            return None
        if theirs.dim() == 2 and theirs.shape[1] == ours.shape[1]:
            n, m = theirs.shape[0], ours.shape[0]
            return (
                f"other number of classes: the checkpoint's head (fc) has {n} classes, the model "
                f"{m}. Pass adapt_head=True (--adapt-head) to start a new {m}-class head on these "
                f"features, or create the model with num_classes={n} to keep the trained head."
            )
        return (
            f"the head's input differs (checkpoint fc {tuple(theirs.shape)}, model "
            f"{tuple(ours.shape)}): the feature widths differ, see below"
        )
    if theirs is None:
        assert ours is not None
        return (
            "the checkpoint has no classifier (fc): it is a backbone. Pass adapt_head=True "
            f"(--adapt-head) to initialise a new {ours.shape[0]}-class head, or create the model "
            "with num_classes=0."
        )
    return (
        f"the model has no head (num_classes=0) but the checkpoint has a {theirs.shape[0]}-class "
        f"fc: pass adapt_head=True (--adapt-head) to drop it, or create the model with "
        f"num_classes={theirs.shape[0]}."
    )


def _diagnose_in_chans(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str | None:
    key = "conv1.0.weight" if "conv1.0.weight" in expected else "conv1.weight"
    ours, theirs = expected.get(key), state.get(key)
    if ours is None or theirs is None or theirs.dim() != 4 or theirs.shape[1] == ours.shape[1]:
        return None
    return (
        f"other number of input channels: the checkpoint's {key} takes {theirs.shape[1]}, the "
        f"model's {ours.shape[1]}. Pass adapt_in_chans=True (--adapt-in-chans) to adapt it as "
        "timm does (1 channel: sum over RGB; N: repeat RGB, scaled by 3/N), or create the "
        f"model with in_chans={theirs.shape[1]}."
    )


def _diagnose_stem(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str | None:
    deep_ckpt, deep_model = "conv1.0.weight" in state, "conv1.0.weight" in expected
    if deep_ckpt != deep_model:
        has, other = ("checkpoint", "model") if deep_ckpt else ("model", "checkpoint")
        return (
            f"other stem: the {has} has the deep 3-conv stem (conv1.0 ... conv1.6, ResNet-C/D, "
            f"stem='deep'), the {other} a single conv1: check --arch (resnet50d?)"
        )
    ours, theirs = expected.get("conv1.weight"), state.get("conv1.weight")
    if ours is None or theirs is None or theirs.dim() != 4 or theirs.shape[-1] == ours.shape[-1]:
        return None

    def name(k: int) -> str:
        return {3: "3x3, a CIFAR stem", 7: "7x7, an ImageNet stem"}.get(k, f"{k}x{k}")

    cifar = (
        ", or build it with the CIFAR stem (3x3 at stride 1, no max-pool, as kuangliu's "
        "pytorch-cifar ResNet-18): stem='cifar' (--model-option stem=cifar)"
        if theirs.shape[-1] == 3 and ours.shape[-1] == 7
        else ""
    )
    return (
        f"other stem: the checkpoint's conv1 is {name(theirs.shape[-1])}; the model's is "
        f"{name(ours.shape[-1])}: check --arch{cifar}"
    )


def _blocks(keys: Iterable[str]) -> dict[tuple[int, int], set[str]]:
    blocks: dict[tuple[int, int], set[str]] = {}
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks.setdefault((int(match.group(1)), int(match.group(2))), set()).add(match.group(3))
    return blocks


def _counts(blocks: Mapping[tuple[int, int], set[str]]) -> tuple[int, ...]:
    stages = sorted({stage for stage, _ in blocks})
    return tuple(sum(1 for s, _ in blocks if s == stage) for stage in stages)


def _block_type(blocks: Mapping[tuple[int, int], set[str]]) -> str:
    return "bottleneck" if any("conv3.weight" in parts for parts in blocks.values()) else "basic"


def _projected(blocks: Mapping[tuple[int, int], set[str]]) -> set[tuple[int, int]]:
    return {b for b, parts in blocks.items() if any(p.startswith("downsample.") for p in parts)}


def _option(blocks: Mapping[tuple[int, int], set[str]]) -> str:
    """The shortcut option (paper Table 3) that projects in these blocks."""
    projected = _projected(blocks)
    return "A" if not projected else "C" if projected == set(blocks) else "B"


def _archs_like(layers: tuple[int, ...], block: str, like: ResNetConfig) -> list[str]:
    """Registered models with these stage depths, of the same family as ``like``."""
    names = []
    for name in list_models():
        c = get_model_config(name)
        plain = (c.shortcut == "none") == (like.shortcut == "none")
        if c.layers == layers and c.block == block and c.preact == like.preact and plain:
            names.append(name)
    return names[:4]


#: Findings that explain shape mismatches all over the network by themselves.
_STRUCTURAL = ("other block type", "other stem", "other projection", "pre-activation")
_OPTION_WORDS = {
    "A": "option A (identity, zero-padded where the shape changes; no parameters) or a plain "
    "net (shortcut='none')",
    "B": "option B (projection only where the shape changes)",
    "C": "option C (projection in every block)",
}


def _diagnose_blocks(
    model: ResNet, state: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> list[str]:
    theirs, ours = _blocks(state), _blocks(expected)
    if not theirs:
        return []
    found = []
    block = _block_type(theirs)
    if block != _block_type(ours):
        found.append(
            f"other block type: the checkpoint has {block} blocks, the model "
            f"{_block_type(ours)} blocks: check --arch"
        )
    counts = _counts(theirs)
    if counts != _counts(ours):
        like = _archs_like(counts, block, model.config)
        like_text = f" (like {', '.join(like)})" if like else ""
        only_theirs = sorted(set(theirs) - set(ours))
        only_ours = sorted(set(ours) - set(theirs))
        example = (
            f"layer{only_theirs[0][0]}.{only_theirs[0][1]} is in the checkpoint only"
            if only_theirs
            else f"layer{only_ours[0][0]}.{only_ours[0][1]} is in the model only"
        )
        found.append(
            f"other depth: the checkpoint has {counts} {block} blocks per stage{like_text}, "
            f"the model ({model.name}) {_counts(ours)}; e.g. {example}. Create the model with "
            "the checkpoint's architecture."
        )
    projected_theirs, projected_ours = _projected(theirs), _projected(ours)
    option, option_ours = _option(theirs), _option(ours)
    if option != option_ours and block == _block_type(ours):
        found.append(
            f"other shortcut option: the checkpoint has projection shortcuts (downsample) in "
            f"{len(projected_theirs)} of {len(theirs)} blocks, i.e. {_OPTION_WORDS[option]}; "
            f"the model uses option {model.config.shortcut} ({len(projected_ours)} of "
            f"{len(ours)} blocks). Create the model with shortcut='{option}'."
        )
    else:
        avg_theirs = any("downsample.2.weight" in theirs[b] for b in projected_theirs)
        avg_ours = any("downsample.2.weight" in ours[b] for b in projected_ours)
        if avg_theirs != avg_ours:
            has, other = ("checkpoint", "model") if avg_theirs else ("model", "checkpoint")
            found.append(
                f"other projection shortcut: the {has} average-pools then projects (ResNet-D, "
                f"avg_down=True: downsample.1 conv, downsample.2 BN), the {other} uses a "
                "strided 1x1 (downsample.0 conv, downsample.1 BN)"
            )
    if ("final_bn.weight" in state) != ("final_bn.weight" in expected):
        has = "checkpoint" if "final_bn.weight" in state else "model"
        found.append(
            f"pre-activation: only the {has} has final_bn, the BN-ReLU that ends pre-activation "
            "nets (preact=True): check --arch (preact_resnet*)"
        )
    return found


def _stride_name(stride_in_1x1: bool) -> str:
    return "v1 (stride on the first 1x1)" if stride_in_1x1 else "v1.5 (stride on the 3x3)"


def stride_findings(model: ResNet, ckpt: Checkpoint) -> tuple[list[str], list[str]]:
    """(notes, blocking problems) about the stride placement, which shapes cannot reveal."""
    if model.config.block != "bottleneck":
        return [], []
    ours, theirs = model.config.stride_in_1x1, ckpt.stride_in_1x1
    if theirs is None:
        if ckpt.source_format in ("torchvision", "timm") and ours:
            # Every ResNet they publish is v1.5, but a plain state dict with these names may
            # be anyone's (resnetkit's own use them too): a note, not a refusal.
            return [
                f"the model is {_stride_name(ours)}, and torchvision's and timm's ResNets are "
                "all v1.5 (stride on the 3x3): shapes cannot tell them apart, so their weights "
                "would load here and give wrong outputs. If these weights come from either, "
                "create the model with stride_in_1x1=False (the default)."
            ], []
        if ckpt.source_format != "huggingface":
            return [], []
        return [
            "v1 vs v1.5 cannot be told from the weights' shapes: Hugging Face ResNets are v1.5 "
            "unless their config.json says downsample_in_bottleneck=true; the model is "
            f"{_stride_name(ours)}. Load the directory with its config.json to have it checked."
        ], []
    if theirs == ours:
        return [], []
    why = {
        "keras": "keras.applications ResNets are v1",
        "huggingface": f"its config.json has downsample_in_bottleneck={str(theirs).lower()}",
    }.get(ckpt.source_format, f"its config has stride_in_1x1={theirs}")
    return [], [
        f"other stride placement: the checkpoint is ResNet {_stride_name(theirs)}: {why}. The "
        f"model is {_stride_name(ours)}. Shapes cannot tell them apart, so the weights would "
        f"load and give wrong outputs. Create the model with stride_in_1x1={theirs}."
    ]


def architecture_findings(model: ResNet, ckpt: Checkpoint) -> list[str]:
    """Blocking problems: a resnetkit model directory says what its weights compute beyond
    their names and shapes (option-A shortcuts or none, the 2016 paper's units and skips); a
    model that differs there would load them and compute something else."""
    saved = ckpt.architecture.get("config") or {}
    ours = model.config
    fields = ["shortcut", "unit", "skip"]
    if saved.get("skip") == ours.skip and ours.skip in SKIP_FIELDS:
        # the same skip's scales; gate_bias only starts the gates' biases, which are weights
        fields += [f for f in SKIP_FIELDS[ours.skip] if f != "gate_bias"]
    differ = [
        f"{name}={saved[name]!r} (the model: {getattr(ours, name)!r})"
        for name in fields
        if name in saved and saved[name] != getattr(ours, name)
    ]
    if not differ:
        return []
    return [
        f"other architecture: the checkpoint is a {ckpt.architecture.get('arch')} with "
        f"{', '.join(differ)}: its weights would load here and compute something else. Create "
        "the model as it was (resnetkit.load_model on the directory builds it)."
    ]
