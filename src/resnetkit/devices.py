"""The ``--device`` of every command: parsed once, with an error that says what exists."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``... as a :class:`torch.device` that this
    machine has.

    Raises:
        ValueError: not a device name, or a GPU that is not here (the message lists what is).
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"--device {device!r} is not a device: use cpu, cuda, cuda:N (N-th GPU) or mps"
        ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: this machine has no CUDA GPU; use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"--device {device}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS (Apple GPU) is not available; use cpu")
    return resolved
