"""Stopping a run cleanly on a signal: after the current step, once a checkpoint is written."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any


class StopSignals:
    """SIGTERM (``kill``, a batch system's pre-emption, torchrun passing one on) and the first
    Ctrl-C ask the run to stop at the end of the current step, after a checkpoint; a second
    Ctrl-C stops at once. Only the main thread can install handlers: elsewhere (a server's
    worker thread) the signals keep their old meaning.

    Args:
        announce: say on stderr that the run is stopping (the main DDP process only).
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.signum: int | None = None  # SIGTERM or SIGINT received
        self._old_handlers: dict[int, Any] = {}
        self._handler_pid = os.getpid()

    def catch(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._handler_pid = os.getpid()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._old_handlers.items():
            # None: a handler installed from C, which Python cannot put back; the default then.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._handler_pid:
            return  # a forked data-loading worker: it keeps feeding the step
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            # os.write, not print: a handler that interrupts a print to the same stream would
            # make Python raise "reentrant call" and kill the run without its checkpoint.
            again = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
            name = signal.Signals(signum).name
            message = f"{name}: stopping after this step, once a checkpoint is written{again}\n"
            with contextlib.suppress(OSError):
                os.write(sys.stderr.fileno(), message.encode())
