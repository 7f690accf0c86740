"""One front door for trained models: a model directory, a packaged tag, or a checkpoint file.

Checkpoint files are read without running code: ``.safetensors`` directly, ``.pt``/``.pth``
only through ``torch.load(..., weights_only=True)``. A pickle that needs anything beyond tensors
and plain containers (a whole pickled model, a custom class) is refused, never unpickled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetkit.models.model_dir import check_preprocessing, load_model_dir
from resnetkit.models.registry import create_model, get_model_config
from resnetkit.models.resnet import ResNet

#: Normalisation assumed for a bare checkpoint, which carries no preprocessing of its own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SAFETENSORS_SUFFIXES = (".safetensors",)
#: torch.save files; ``.pth.tar`` is what pytorch/examples' ImageNet script and timm's train.py
#: name their checkpoints, ``.th`` akamaster's CIFAR ResNets.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".th")
KERAS_SUFFIXES = (".npz", ".h5", ".hdf5", ".keras")  # Keras ResNet weights (h5py for .h5, .keras)
#: Keys under which training scripts commonly nest the weights, tried in this order.
NESTED_KEYS = ("state_dict", "model_state_dict", "model")
#: Prefixes added by DistributedDataParallel / DataParallel and by ``torch.compile``.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: What ``resnetkit export`` writes: files to deploy, not to load back as a model.
EXPORT_SUFFIXES = (".onnx", ".ts", ".pt2", ".tflite", ".mlpackage")


def load_model(
    name_or_dir: str | Path,
    *,
    arch: str | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    classes: list[str] | None = None,
    **options: Any,
) -> ResNet:
    """Load a trained model in eval mode, with ``model.pretrained_cfg`` attached.

    Args:
        name_or_dir: a model directory (``config.json`` + ``model.safetensors``), a packaged
            weights tag such as ``resnet20.cifar10``, a Hugging Face Hub repository
            (``hf-hub:timm/resnet50.a1_in1k``) or a folder in its layout (timm's or
            transformers'), or, with ``arch``, a checkpoint file
            (``.safetensors``, ``.pt``/``.pth`` holding a state dict, or Keras ``.npz``/``.h5``).
        arch: registered architecture of a bare checkpoint file, e.g. ``resnet20``. For a
            directory or tag it is optional and must match.
        preprocessing: for a bare checkpoint file only, how its inputs were prepared, which
            the file cannot say: ``mean``, ``std`` (0-1 scale), ``input_size`` and optionally
            ``crop``, ``resize``, ``crop_pct``, ``interpolation`` (as in a model directory's
            config.json), e.g. ``{"mean": CIFAR_MEAN, "std": CIFAR_STD, "input_size": 32}``.
            What is not given keeps the default: ImageNet mean/std, ``arch``'s input size.
        classes: for a bare checkpoint file only, the names of its outputs, in order.
        **options: for a bare checkpoint file only, the architecture fields it was built with
            (``unit``, ``shortcut``, ``stride_in_1x1``...): the weights alone cannot tell a
            Fig. 4 unit variant from the original, whose weight names it shares.

    Returns:
        The model in eval mode. ``model.pretrained_cfg`` has at least ``classes`` (may be
        empty), ``mean``, ``std`` and ``input_size``; bare checkpoints get ImageNet mean/std and
        the architecture's default input size unless ``preprocessing`` says otherwise.

    Raises:
        ValueError: a checkpoint without ``arch``, a checkpoint that needs arbitrary unpickling,
            keys or shapes that do not fit the architecture, or a name that is neither a path
            nor a packaged tag.
        FileNotFoundError: a path-like name that does not exist, or an incomplete directory.
        TypeError: ``name_or_dir`` is neither a string nor a path (a model is already loaded).
    """
    if not isinstance(name_or_dir, str | os.PathLike):
        hint = (
            ": it is already a model (to load weights into it, use resnetkit.load_checkpoint)"
            if isinstance(name_or_dir, nn.Module)
            else ""
        )
        raise TypeError(
            f"load_model takes a name or a path, got {type(name_or_dir).__name__}{hint}"
        )
    path = Path(name_or_dir).expanduser()
    if options and not (path.is_file() and arch is not None):
        raise ValueError(
            f"architecture options ({', '.join(options)}) apply to bare checkpoint files; "
            f"{name_or_dir} already says how it was built{_built_hint(name_or_dir, options)}"
        )
    if (preprocessing is not None or classes is not None) and not path.is_file():
        raise ValueError(
            f"preprocessing and classes apply to bare checkpoint files; {name_or_dir} carries "
            "its own (a model directory's are in its config.json)"
        )
    from resnetkit.models.hf_hub import get_folder_weights, is_hf_hub_name, is_hub_folder
    from resnetkit.models.registry import model_from_weights

    if is_hf_hub_name(str(name_or_dir)) and not path.exists():
        model = _load_tag(str(name_or_dir))
    elif path.is_dir() and is_hub_folder(path):  # timm's or transformers' layout, downloaded
        model = model_from_weights(get_folder_weights(path))
    elif path.is_dir():
        if not (path / "config.json").is_file():
            refuse_run_folder(path)
        model = load_model_dir(path)
    elif path.is_file():
        from resnetkit.data.images import IMAGE_EXTENSIONS

        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise ValueError(
                f"{path} is a picture, not a model: give --model a model directory, a tag "
                "such as resnet20.cifar10 or a checkpoint file, and the pictures after it"
            )
        if path.suffix.lower() in EXPORT_SUFFIXES:
            raise ValueError(
                f"{path} is an exported model, which runs outside PyTorch training: this "
                "needs a model directory, a tag or a checkpoint file (predict, evaluate and "
                "serve also run .onnx exports)"
            )
        if preprocessing is None and classes is None:
            _refuse_model_dir_file(path)
        if arch is None:
            raise ValueError(
                f"{path} is a bare checkpoint file: give its architecture too "
                "(arch='resnet50', or --arch resnet50 on the command line)"
            )
        model = load_checkpoint_file(
            path, arch, preprocessing=preprocessing, classes=classes, **options
        )
    elif (
        path.suffix.lower() in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES + KERAS_SUFFIXES
        or len(path.parts) > 1
        or str(name_or_dir).startswith((".", "~", "/"))  # "./model": a path, not a tag
    ):
        raise FileNotFoundError(f"no such model directory or checkpoint file: {path}")
    else:
        model = _load_tag(str(name_or_dir))
    if arch is not None and model.name != arch:
        raise ValueError(f"{name_or_dir} holds a {model.name}, not the requested arch {arch!r}")
    model.pretrained_cfg = preprocessing_of(model)  # type: ignore[assignment]
    return model.eval()


def load_classifier(name_or_path: str | Path, *, arch: str | None = None) -> nn.Module:
    """:func:`load_model`, or for an ``.onnx`` file written by ``resnetkit export``, that file
    run by ONNX Runtime (:class:`~resnetkit.export.runtime.OrtClassifier`), with the class
    names and preprocessing it carries: what ``predict``, ``evaluate`` and ``serve`` load."""
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".onnx" and not path.is_file():
        raise FileNotFoundError(f"no such ONNX file: {path}")
    if path.suffix.lower() == ".onnx":
        from resnetkit.export.runtime import OrtClassifier

        model = OrtClassifier(path)
        if arch is not None and model.name != arch:
            raise ValueError(f"{path} holds a {model.name}, not the requested arch {arch!r}")
        return model
    return load_model(name_or_path, arch=arch)


def load_model_or_random(name_or_dir: str | Path, *, arch: str | None = None) -> ResNet:
    """:func:`load_model`, or, for a bare architecture name such as ``resnet50``, that
    architecture with random weights and its default preprocessing: what speed measurements
    need, since a model's speed does not depend on its weights' values."""
    from resnetkit.models.registry import get_registry

    name = str(name_or_dir)
    if arch is None and name in get_registry() and not Path(name).exists():
        model = create_model(name).eval()
        assert isinstance(model, ResNet)
        model.pretrained_cfg = preprocessing_of(model)  # type: ignore[assignment]
        return model
    return load_model(name_or_dir, arch=arch)


def _refuse_model_dir_file(path: Path) -> None:
    """A model directory's ``config.json`` or ``model.safetensors`` given alone: loaded as a
    bare checkpoint, the weights would lose the class names and preprocessing that the
    ``config.json`` beside them holds (CIFAR's mean/std read as ImageNet's), so name the folder."""
    folder = path.parent
    if path.name not in ("config.json", "model.safetensors"):
        return
    if not ((folder / "config.json").is_file() and (folder / "model.safetensors").is_file()):
        return
    raise ValueError(
        f"{path} is a file of the model directory {folder}, whose config.json holds the class "
        f"names and preprocessing the weights need: pass the folder (--model {folder})"
    )


def refuse_run_folder(path: Path, flag: str = "--model ") -> None:
    """Raise if ``path`` is a training run's folder, its ``checkpoints/`` or one of its
    checkpoints, naming what to pass instead (as ``flag`` + a path: ``--model X``, or ``""``
    for a command's positional source)."""
    _refuse_run_folder(path, flag=flag)
    for run in (path.parent, path.parent.parent):  # RUN/checkpoints[/ckpt-N]
        if path.is_relative_to(run / "checkpoints"):
            _refuse_run_folder(run, given=path, flag=flag)


def _refuse_run_folder(path: Path, *, given: Path | None = None, flag: str = "--model ") -> None:
    """A training run's folder (``train``/``finetune --out``) is not a model directory: name
    the model it holds (``RUN/model``) or, unfinished, its latest checkpoint's weights.
    ``given``: the run's ``checkpoints/`` or one of its checkpoints, which was passed instead."""
    from resnetkit.train.checkpoint import latest_checkpoint
    from resnetkit.train.run_folder import read_run_json

    if not ((path / "checkpoints").is_dir() or (path / "run.json").is_file()):
        return
    what = (
        f"{path} is a training run's folder"
        if given is None
        else f"{given} is part of the training run {path}"
    )
    model_dir = path / "model"
    if (model_dir / "config.json").is_file():
        raise ValueError(
            f"{what}, not a model directory: the model it trained is {model_dir}; pass that "
            f"({flag}{model_dir})"
        )
    run = read_run_json(path)
    origin = run.get("origin")
    command = origin.get("command", "train") if isinstance(origin, dict) else "train"
    try:
        latest = latest_checkpoint(path / "checkpoints")
    except (OSError, ValueError):
        latest = None
    resume = f"finish the run (`resnetkit {command} ... --out {path} --resume`)"
    if latest is None:
        raise ValueError(
            f"{what} that holds no model yet (no {model_dir}) and "
            f"no checkpoint: {resume}, or start it again"
        )
    chosen = given if given is not None and (given / "model.safetensors").is_file() else latest
    weights = chosen / "model.safetensors"
    arch = run.get("model") or "ARCH"
    raise ValueError(
        f"{what} that has not finished: no {model_dir} yet. "
        f"{resume[0].upper()}{resume[1:]} to write it, or load the weights of "
        f"{'that' if chosen is given else 'its latest'} checkpoint, without the run's class "
        f"names and preprocessing: {flag}{weights} --arch {arch}"
    )


def _built_hint(name: str | os.PathLike[str], options: Mapping[str, Any]) -> str:
    """What to do instead of ``load_model(NAME, num_classes=4)``, ``pretrained=True``..., as
    the end of the message that refuses it."""
    if "pretrained" in options:
        return ": load_model always loads its weights; drop pretrained"
    adapt = {k: v for k, v in options.items() if k in ("num_classes", "in_chans")}
    if not adapt:
        return ""
    if Path(name).expanduser().exists():  # a model directory: its head can be replaced
        if "num_classes" not in adapt:
            return ""
        return f": load it, then model.reset_classifier({adapt['num_classes']}) for a new head"
    given = ", ".join(f"{k}={v!r}" for k, v in adapt.items())
    return (
        ": for a new head or first conv, create_model adapts the weights: "
        f"resnetkit.create_model({str(name)!r}, pretrained=True, {given})"
    )


def _load_tag(name: str) -> ResNet:
    try:
        model = create_model(name, pretrained=True)
    except KeyError as err:  # unknown architecture or no packaged weights of that name
        raise ValueError(
            f"{name!r} is not a model directory or checkpoint file here, nor packaged weights: "
            f"{err.args[0] if err.args else err}"
        ) from None
    assert isinstance(model, ResNet)
    return model


def preprocessing_of(model: nn.Module) -> dict[str, Any]:
    """What a model expects as input, with defaults filled in.

    Args:
        model: any model; ``model.pretrained_cfg`` is used when present.

    Returns:
        A copy of ``pretrained_cfg`` with at least ``classes`` (list, may be empty), ``mean``
        and ``std`` (lists of 3 floats, on the 0-1 scale) and ``input_size`` (int). A
        ``pixel_mean`` entry (3*H*W floats, the 2015 paper's per-pixel mean) is kept.
    """
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    config = getattr(model, "config", None)
    default_size = int(getattr(config, "default_input_size", 224))
    cfg["classes"] = list(cfg.get("classes") or [])
    cfg["mean"] = [float(v) for v in cfg.get("mean") or IMAGENET_MEAN]
    cfg["std"] = [float(v) for v in cfg.get("std") or IMAGENET_STD]
    size = cfg.get("input_size") or default_size
    if isinstance(size, list | tuple):  # timm's (channels, height, width)
        size = size[-1]
    cfg["input_size"] = int(size)
    return cfg


def load_checkpoint_file(
    path: str | Path,
    arch: str,
    *,
    preprocessing: Mapping[str, Any] | None = None,
    classes: list[str] | None = None,
    **options: Any,
) -> ResNet:
    """Build ``arch`` and load a bare checkpoint file into it (strict, shapes checked).

    The number of classes is read from the ``fc.weight`` shape (no ``fc`` means a headless
    backbone), the input channels from the first conv's. Weights nested under
    ``state_dict``, ``model_state_dict`` or ``model`` are unwrapped and ``module.`` /
    ``_orig_mod.`` prefixes stripped; Hugging Face names and heads called
    ``linear``/``classifier``/``head`` are translated (see :mod:`resnetkit.interop`).

    Args:
        path: ``.safetensors``, ``.pt``/``.pth`` holding a state dict, or Keras
            ``.npz``/``.h5``.
        arch: a registered architecture, e.g. ``resnet20``.
        preprocessing: the inputs' ``mean``, ``std``, ``input_size``... (see
            :func:`load_model`), over the defaults.
        classes: the names of the outputs, in order.
        **options: architecture fields the file cannot tell, e.g. ``unit="bn_after_add"`` or
            ``shortcut="B"`` (a bare file holds weights only; model directories keep them).

    Returns:
        The model, with ``pretrained_cfg`` set to ``preprocessing`` over ImageNet mean/std
        (Keras weights: v1 stride placement and Keras' caffe-style mean/std) and ``arch``'s
        input size.
    """
    from resnetkit.interop.convert import load_checkpoint, read_checkpoint
    from resnetkit.interop.formats import KERAS_MEAN, KERAS_STD

    path = Path(path)
    checkpoint = read_checkpoint(path)  # as `resnetkit convert` reads it
    state = checkpoint.state
    fc = state.get("fc.weight")
    num_classes = int(fc.shape[0]) if fc is not None else 0
    if "num_classes" in options:
        raise ValueError("num_classes is read from the checkpoint's fc.weight; do not pass it")
    stem = next((state[k] for k in ("conv1.weight", "conv1.0.weight") if k in state), None)
    if stem is not None and stem.dim() == 4 and "in_chans" not in options:
        options["in_chans"] = int(stem.shape[1])  # a grey (1) or multispectral first conv
    keras = checkpoint.source_format == "keras"
    if keras and get_model_config(arch).block == "bottleneck":
        # keras.applications ResNet50/101/152 are v1 (stride in the first 1x1), which the
        # weights' shapes cannot tell.
        options.setdefault("stride_in_1x1", True)
    config = get_model_config(arch).with_options(num_classes=num_classes, **options)
    model = ResNet(config, name=arch)
    load_checkpoint(model, checkpoint)  # what does not fit is explained, as by convert
    names = classes if classes is not None else []
    given = check_preprocessing(model, preprocessing, names)  # a string of names is refused
    model.pretrained_cfg = {  # type: ignore[assignment]
        "classes": list(names),
        # Keras weights were trained on caffe-style inputs (0-255, mean only)
        "mean": list(KERAS_MEAN if keras else IMAGENET_MEAN),
        "std": list(KERAS_STD if keras else IMAGENET_STD),
        "input_size": config.default_input_size,
        **given,
        "source": str(path),
    }
    return model


def torch_load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with clear errors: a pickle that names code to run is
    refused as unsafe; anything else unreadable (an HTML error page, a Git LFS pointer, a
    truncated download) is "not a readable PyTorch checkpoint"."""
    try:
        # timm's train.py keeps its argparse.Namespace under 'args': attributes only, no code
        # (timm's own loader allows it too).
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        program = _saved_program(path)
        if program is not None:
            kind, weights = program
            raise ValueError(
                f"{path}: a {kind} program, not a checkpoint: resnetkit reads weights only. "
                "Save the model's state_dict() where it was made; or, if you trust the file, "
                f"{weights} holds the weights under the model's names (save them with "
                "safetensors.torch.save_file and pass that file)"
            ) from None
        # "Unsupported global: GLOBAL x.y" (an unknown class) or "unsupported GLOBAL x.y
        # whose module x is blocked" (os.system and the like): either way, code to run.
        match = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(err), re.IGNORECASE)
        if isinstance(err, pickle.UnpicklingError) and match:
            raise ValueError(
                f"{path} cannot be loaded with weights_only=True (it references "
                f"{match.group(1)}): it needs arbitrary "
                "unpickling, which can run any code, and resnetkit refuses it for safety. To "
                "convert it, load it yourself in a trusted environment and save only the "
                "weights, e.g. "
                "`from safetensors.torch import save_file; "
                "save_file(model.state_dict(), 'model.safetensors')`, then pass that file."
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        first = first.split(". ")[0]  # torch's advice follows; cut, it read "... file is)"
        if "weights only load failed" in str(err).lower():  # torch's text ends in unsafe advice
            first = "bytes that are no pickle of tensors"
        if "legacy .tar format" in str(err):  # a tarball; torch advises weights_only=False
            raise ValueError(
                f"{path}: a tar archive, not a torch.save file: unpack it (tar -xf {path.name}) "
                "and pass the checkpoint file or model folder it holds"
            ) from None
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint, neither a torch.save archive nor a "
            f"weights pickle ({type(err).__name__}: {first[:200]})"
            + (stand_in_hint(path) or (CUT_SHORT if "unexpected EOF" in str(err) else ""))
        ) from None


def _saved_program(path: Path) -> tuple[str, str] | None:
    """``(kind, how to get its weights)`` for a TorchScript archive or an ExportedProgram
    (torch.jit.save, torch.export.save: zips of code and weights), else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any("/code/__torch__/" in name for name in names):
        return "TorchScript", f"torch.jit.load('{path}').state_dict()"
    if any(name.endswith("/archive_format") for name in names):
        return "ExportedProgram", f"torch.export.load('{path}').state_dict"
    return None


#: The end of an error about a file that ends early.
CUT_SHORT = "; it is cut short (an interrupted download or copy?): fetch or copy it again"


def stand_in_hint(path: Path) -> str:
    """What a weights file holds instead, where its first bytes tell (a Git LFS pointer, an
    HTML page, a zip archive without its end), as the end of an error ("; it is ..."); ""
    otherwise."""
    with contextlib.suppress(OSError):
        with path.open("rb") as f:
            head = f.read(64)
        if not head:
            return "; it is empty (0 bytes: an interrupted download or copy?)"
        if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
            return CUT_SHORT  # a zip's directory is at its end
        if head.startswith(b"version https://git-lfs"):
            return "; it is a Git LFS pointer: run `git lfs pull` to fetch the real file"
        if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
            return "; it is an HTML page (a failed download?)"
    return ""
