"""Ctrl-C during training: one line that says where to resume, not a traceback.

The first SIGINT stops the run where it is (Python's ``KeyboardInterrupt``: a checkpoint being
written is abandoned whole, since checkpoints are written atomically) and restores the default
action, so a second Ctrl-C ends the process at once, whatever it is doing then.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator

from repnext_mm.utils.errors import InputError

#: The shell's exit status for a process stopped by SIGINT (128 + 2).
SIGINT_EXIT_STATUS = 130


class TrainingInterrupted(InputError):
    """The user stopped the run (Ctrl-C); the message says how to continue it."""

    exit_status = SIGINT_EXIT_STATUS


def _first_interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C exits at once
    raise KeyboardInterrupt


@contextlib.contextmanager
def second_interrupt_exits() -> Iterator[None]:
    """Within the block, the first SIGINT raises ``KeyboardInterrupt`` and the second kills.

    Outside the main thread (where signal handlers cannot be set) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _first_interrupt)
    try:
        yield
    finally:
        # None: a handler not set from Python; Python's own is the closest to put back.
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
