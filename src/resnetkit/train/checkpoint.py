"""Crash-safe checkpoints: weights in safetensors, the rest in a weights-only torch file.

A checkpoint is a folder ``ckpt-<step>``; the file ``latest`` names the newest complete one and is
replaced atomically only after the folder is fully written and synced, so a kill -9 at any moment
leaves the previous checkpoint usable. Nothing is ever unpickled beyond tensors and containers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnetkit.download import usual_mode

# torch is imported where tensors are written or read: the helpers for plain files also serve
# the command line, which should start fast.
if TYPE_CHECKING:
    import torch

LATEST = "latest"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        usual_mode(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def state_dict_for_save(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of a state dict (safetensors needs contiguous, unshared tensors)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(
    root: Path,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``root/ckpt-<step>`` (one safetensors file per entry of ``tensors``, ``state.pt``),
    then point ``root/latest`` at it and remove older checkpoints beyond ``keep``."""
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-ckpt-"))
    for name, tensor_dict in tensors.items():
        save_file(tensor_dict, str(tmp / f"{name}.safetensors"))
    torch.save(state, tmp / "state.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
        usual_mode(f)
    usual_mode(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / LATEST, final.name + "\n")
    old = sorted(p for p in root.glob("ckpt-*") if p != final)
    for p in old[: max(len(old) - (keep - 1), 0)]:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-ckpt-*"):  # left over by a crash during an earlier save
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``root/latest`` names or, without that file, the newest ``ckpt-*``
    folder (each is complete: it is renamed into place only once fully written); None if
    there is none."""
    pointer = root / LATEST
    complete = sorted(p for p in root.glob("ckpt-*") if (p / "state.pt").is_file())
    if not pointer.exists():
        return complete[-1] if complete else None
    name = pointer.read_text().strip()
    newest = f"the newest complete one, {complete[-1].name}" if complete else "none left"
    if not name or Path(name).name != name or name in (".", ".."):  # a path, not a name
        raise ValueError(
            f"{pointer} names {name!r}, which is not a checkpoint folder inside {root}: a run "
            f"resumes only from its own. Write a ckpt-* name of {root} into it, or delete it "
            f"to resume from {newest}"
        )
    folder = root / name
    if not (folder / "state.pt").exists():
        raise FileNotFoundError(
            f"{pointer} names {folder}, which is incomplete or missing; restore the folder, or "
            f"delete {pointer} to resume from {newest}"
        )
    return folder


def older_checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints beside ``folder`` written before it, oldest first."""
    return sorted(
        p
        for p in folder.parent.glob("ckpt-*")
        if p.name < folder.name and (p / "state.pt").is_file()
    )


def load_checkpoint_tensors(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The weights of a checkpoint written by :func:`save_checkpoint`, by file (``model``,
    ``ema``, ...); its ``state.pt`` is read and checked by
    :func:`resnetkit.train.resume.read_state`."""
    from safetensors.torch import load_file

    return {p.name[: -len(".safetensors")]: load_file(str(p)) for p in folder.glob("*.safetensors")}
