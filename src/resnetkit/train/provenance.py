"""What a run records about itself: versions, git commit, command line, machine."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import resnetkit


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of resnetkit's source tree (None outside its own checkout: an
    install into a project's .venv sits inside that project's repository, not ours)."""
    here = cwd or Path(resnetkit.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD", "--show-toplevel"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.splitlines()  # the top-level path may hold spaces
    if out.returncode != 0 or len(lines) != 2:
        return None
    commit, top = lines
    try:
        project = (Path(top) / "pyproject.toml").read_text()
    except OSError:
        return None
    return commit if 'name = "resnetkit"' in project else None


def provenance() -> dict[str, Any]:
    # Imported here: torchvision alone takes seconds, which the command line's help should not.
    import numpy as np
    import torch
    import torchvision

    return {
        "resnetkit": resnetkit.__version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": shlex.join(sys.argv),  # pasted back into a shell, it runs again
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threads": torch.get_num_threads(),
    }


def cpu_model() -> str:
    """The CPU's marketing name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, torch build and threads, current load."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        **provenance(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        # A benchmark on a machine that is busy with something else measures that too.
        info["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    return info
