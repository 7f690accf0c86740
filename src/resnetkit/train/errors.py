"""How a training run can stop early (kept apart from the trainer so the CLI imports little)."""

from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or Ctrl-C stopped the run at the end of a step, after writing a checkpoint.

    ``main_process`` is False in the other processes of a DDP run: they stop alike, and only
    the main one needs to say so.
    """

    def __init__(self, message: str, signum: int, main_process: bool = True) -> None:
        super().__init__(message)
        self.signum = signum
        self.main_process = main_process


class RunFailed(RuntimeError):
    """A training run in a process of its own ended with an error; its log says why."""
