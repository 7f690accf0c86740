"""What an exported file carries beside its weights: class names and input preprocessing.

A server or an app that reads only the ``.onnx`` / ``.ts`` / ``.pt2`` file needs them to name
its predictions and to prepare its input as the model was trained. They are stored as one JSON
text under the key ``resnetkit``: an ONNX ``metadata_props`` entry, or an extra file
``resnetkit.json`` inside a TorchScript or ExportedProgram archive.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

KEY = "resnetkit"
EXTRA_FILE = "resnetkit.json"


def metadata_text(model: nn.Module, preprocessing: dict[str, Any], input_size: int) -> str:
    """The JSON text stored in an exported file: the model's whole preprocessing (classes,
    mean, std, resize, crop, pixel_mean...), its tag and metrics, its architecture name and
    number of classes (0: a backbone), at the input size the file was exported at."""
    meta: dict[str, Any] = dict(preprocessing)
    if input_size != meta.get("input_size"):
        if meta.get("pixel_mean") is not None:  # 3 x H x W values, for the model's own size
            raise ValueError(
                f"the model subtracts a per-pixel mean of {meta.get('input_size')}x"
                f"{meta.get('input_size')} images: export it at that size, not {input_size}"
            )
        meta["input_size"] = input_size
        meta.pop("metrics", None)  # measured at the model's own size, not this one
        meta.pop("crop", None)  # the crop is the input size
        meta.pop("resize", None)  # a resize for another size would crop the wrong share
        meta.pop("crop_pct", None)  # so would this (evaluate and predict use one default)
        meta.pop("min_confidence", None)  # chosen on the probabilities at the model's size
    meta["arch"] = getattr(model, "name", type(model).__name__)
    # A features_only net keeps num_classes but outputs feature maps: no classifier head.
    head = not getattr(model, "features_only", False)
    meta["num_classes"] = int(getattr(model, "num_classes", 0) or 0) if head else 0
    return json.dumps(meta, default=str)


def add_onnx_metadata(path: Path, text: str) -> None:
    """Write ``text`` into the ONNX file's ``metadata_props`` under ``resnetkit`` (nothing
    else writes there: a re-export replaces it)."""
    write_onnx_with_metadata(path, path, text)


def write_onnx_with_metadata(src: str | Path, out: str | Path, text: str) -> Path:
    """A copy of the ONNX file ``src`` at ``out`` (folders created) whose ``resnetkit``
    metadata is ``text``, written atomically: no partial file is left if anything fails."""
    import onnx

    from resnetkit.train.checkpoint import atomic_write_bytes

    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    proto.metadata_props.add(key=KEY, value=text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, proto.SerializeToString())
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Class names and preprocessing of a file written by ``resnetkit export`` (ONNX,
    TorchScript or ExportedProgram); {} for a file exported without them.

    Raises:
        ValueError: a file that is none of the three formats.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):  # TorchScript and ExportedProgram archives: read, not loaded
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
            return dict(json.loads(archive.read(names[0]))) if names else {}
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError, and whatever else a non-ONNX file raises
        raise ValueError(
            f"{path} is not an ONNX, TorchScript or ExportedProgram file ({err})"
        ) from None
    props = {p.key: p.value for p in proto.metadata_props}
    return dict(json.loads(props[KEY])) if KEY in props else {}
