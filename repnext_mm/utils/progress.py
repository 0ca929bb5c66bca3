"""Progress display for tools made of a few long steps (export, conversion).

Loops over many items use MMEngine's ``ProgressBar``; a tool whose time goes into a handful of
named steps of very different lengths shows which step runs and for how long instead.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO


class StepProgress:
    """Shows progress through ``steps``: a rich bar on a terminal, one line per step in logs.

    Use as a context manager and call :meth:`start` with each step's name, in order; starting a
    step completes the previous one. Output goes to stderr, so stdout keeps only results.

    Args:
        steps: The names of the steps, in the order they run.
        stream: Where to draw (default ``sys.stderr``).
        force_terminal: Draw the live bar even when ``stream`` is not a terminal (tests).
    """

    def __init__(self, steps: Sequence[str], stream: TextIO | None = None,
                 force_terminal: bool | None = None) -> None:
        if not steps:
            raise ValueError('StepProgress needs at least one step')
        self.steps = list(steps)
        self._stream = stream or sys.stderr
        self._force_terminal = force_terminal
        self._index = -1
        self._started = 0.0
        self._rich = None
        self._task = None

    def __enter__(self) -> StepProgress:
        self._started = time.perf_counter()
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)
        except ImportError:  # rich is optional for the library: plain lines then
            return self
        console = Console(file=self._stream, force_terminal=self._force_terminal)
        if console.is_terminal:
            self._rich = Progress(SpinnerColumn(), TextColumn('{task.description}'), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console)
            self._rich.start()
            self._task = self._rich.add_task('starting', total=len(self.steps))
        return self

    def start(self, step: str) -> None:
        """Completes the current step and starts ``step`` (the next one in ``steps``)."""
        expected = self.steps[self._index + 1] if self._index + 1 < len(self.steps) else None
        if step != expected:
            raise ValueError(f'step {step!r} started out of order; expected {expected!r} '
                             f'(steps: {self.steps})')
        self._index += 1
        label = f'[{self._index + 1}/{len(self.steps)}] {step}'
        if self._rich is not None:
            self._rich.update(self._task, completed=self._index, description=label)
        else:
            print(f'{label} ({self._elapsed()} elapsed)', file=self._stream, flush=True)

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._rich is not None:
            if exc_type is None:
                self._rich.update(self._task, completed=len(self.steps), description='done')
            self._rich.stop()
        elif exc_type is None:
            print(f'done in {self._elapsed()}', file=self._stream, flush=True)

    def _elapsed(self) -> str:
        return f'{time.perf_counter() - self._started:.1f} s'
