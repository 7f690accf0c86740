"""An exported ONNX file run by ONNX Runtime as if it were the resnetkit model it came from.

``resnetkit predict``, ``evaluate`` and ``serve`` take an ``.onnx`` file as ``--model``: its
class names and preprocessing come from the file (``resnetkit export`` writes them, see
:mod:`resnetkit.export.metadata`), so the file alone is enough to deploy and to check.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

from resnetkit.export.metadata import read_metadata
from resnetkit.models.loading import preprocessing_of


class OrtClassifier(nn.Module):
    """An ONNX Runtime session with the interface evaluation and serving code expects
    (``num_classes``, ``pretrained_cfg``, ``name``, logits from ``forward``).

    Args:
        path: the ONNX file.
        template: the model it was exported from, for its classes and preprocessing; without
            one they are read from the file itself.
        threads: ONNX Runtime's intra-op threads (0: its default).

    Raises:
        ValueError: no template and a file without resnetkit's metadata (it cannot say how its
            input must be prepared), or a file that is not ONNX.
    """

    def __init__(self, path: str | Path, template: nn.Module | None = None, threads: int = 0):
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        meta = {} if template is not None else read_metadata(self.path)
        if template is None and not meta:
            raise ValueError(
                f"{self.path} carries no class names or preprocessing (it was not written by "
                "`resnetkit export`): export the model again with resnetkit, or load the "
                "model it came from"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        inputs = self.session.get_inputs()[0]
        self.input_name = inputs.name
        # A file exported without --dynamic-batch takes batches of exactly one size: larger
        # ones are run in pieces of that size.
        batch, channels = (inputs.shape + [None, None])[:2]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        height = (inputs.shape + [None] * 4)[2]
        #: The input side the file was exported at (None: any; exports fix it).
        self.fixed_input_size = height if isinstance(height, int) and height > 0 else None
        # what evaluation and prediction read to decide grayscale or colour input
        self.config = SimpleNamespace(in_chans=channels if isinstance(channels, int) else 3)
        if template is not None:
            self.num_classes = int(getattr(template, "num_classes", 0))
            self.name = str(getattr(template, "name", self.path.stem))
            self.pretrained_cfg = preprocessing_of(template)
            return
        width = self.session.get_outputs()[0].shape[-1]
        fallback = int(width) if isinstance(width, int) else len(meta.get("classes", []))
        self.num_classes = int(meta.pop("num_classes", fallback))  # 0: a backbone's features
        self.name = str(meta.pop("arch", self.path.stem))
        self.pretrained_cfg = meta
        self.pretrained_cfg = preprocessing_of(self)  # defaults for what the file leaves out

    def forward(self, x: Tensor) -> Tensor:
        device = x.device  # ONNX Runtime runs on the CPU here; results go back where x was
        x = x.detach().cpu().float().contiguous()
        if self.fixed_batch is not None and len(x) != self.fixed_batch:
            if len(x) % self.fixed_batch:
                raise ValueError(
                    f"{self.path} takes batches of {self.fixed_batch} (exported without "
                    f"--dynamic-batch); got {len(x)} images"
                )
            return torch.cat([self(piece) for piece in x.split(self.fixed_batch)])
        out = self.session.run(None, {self.input_name: x.numpy()})
        return torch.from_numpy(np.asarray(out[0])).to(device)

    def file_digest(self) -> str:
        """sha256 of the file: the deployed model's version."""
        return "sha256:" + hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
