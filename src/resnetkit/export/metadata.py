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
# What preprocessing_of keeps that an input pipeline needs (pixel_mean: the 2015 paper's
# per-pixel mean, 3*H*W values, for the models trained with it).
FIELDS = ("classes", "mean", "std", "input_size", "crop", "interpolation", "pixel_mean")


def metadata_text(model: nn.Module, preprocessing: dict[str, Any]) -> str:
    """The JSON text stored in an exported file."""
    meta: dict[str, Any] = {k: preprocessing[k] for k in FIELDS if k in preprocessing}
    meta["arch"] = getattr(model, "name", type(model).__name__)
    return json.dumps(meta)


def add_onnx_metadata(path: Path, text: str) -> None:
    """Write ``text`` into the ONNX file's ``metadata_props`` under ``resnetkit``."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]  # nothing else writes there; a re-export replaces it
    proto.metadata_props.add(key=KEY, value=text)
    onnx.save(proto, str(path))


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
