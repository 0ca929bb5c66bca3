"""The one timer: calls run round-robin after untimed warm-up rounds, with paired statistics.

On a shared machine the background load drifts over seconds; timing A's runs and then B's would
fold that drift into the A/B comparison. Every round therefore calls each function once, so all
of them see the same load, and a ratio is the median of the per-round ratios (paired samples).
Timing a single call is the same loop with one entry.

Medians and inter-quartile ranges are reported because a shared machine's timings have long
upper tails that distort the mean.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping, Sequence

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.progress import StepProgress


@dataclass
class TimingStats:
    """Summary of per-call wall times, in milliseconds."""
    runs: int
    median_ms: float
    p25_ms: float
    p75_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> TimingStats:
        """Summarizes wall times given in seconds."""
        if not samples:
            raise ValueError('no timing samples')
        ms = sorted(s * 1e3 for s in samples)
        if len(ms) >= 2:
            p25, _, p75 = statistics.quantiles(ms, n=4, method='inclusive')
        else:
            p25 = p75 = ms[0]
        return cls(len(ms), statistics.median(ms), p25, p75, p75 - p25, statistics.fmean(ms),
                   ms[0], ms[-1])

    def as_dict(self) -> dict:
        return asdict(self)


def _round_order(names: list[str], round_index: int, warmup: int) -> Iterable[str]:
    # Timed rounds alternate the order, so no function always runs first after a pause.
    timed = round_index >= warmup
    return reversed(names) if timed and (round_index - warmup) % 2 else names


def _step_names(warmup: int, runs: int, label: str) -> list[str]:
    prefix = f'{label}: ' if label else ''
    return ([f'{prefix}warm-up {index + 1}/{warmup}' for index in range(warmup)]
            + [f'{prefix}round {index + 1}/{runs}' for index in range(runs)])


def round_robin(functions: Mapping[str, Callable[[], object]], warmup: int = 10, runs: int = 50,
                synchronize: Callable[[], None] | None = None,
                prepare: Callable[[], None] | None = None, progress: bool = True,
                label: str = '') -> dict[str, list[float]]:
    """Times several calls in alternation; returns each one's per-round wall times in seconds.

    Every round calls each function once: the warm-up rounds in the given order, the timed
    rounds in that order and reversed in turn. The ``i``-th samples of all functions come from
    the same round, which :func:`paired_ratio` relies on.

    Args:
        functions: ``{name: call}``, e.g. ``{'fused': ..., 'unfused': ...}``.
        warmup: Untimed rounds first (allocator, caches, lazy initialization).
        runs: Timed rounds (each function is timed ``runs`` times).
        synchronize: Called before each clock read (``torch.cuda.synchronize`` on GPU).
        prepare: Called before every round, outside the timed interval (e.g. to load the next
            batch the functions read).
        progress: Show progress through the rounds (on stderr).
        label: Names the timed group in the progress display.

    Raises:
        InputError: ``warmup < 0``, ``runs < 1`` or no functions.
    """
    if warmup < 0 or runs < 1:
        raise InputError(f'need warmup >= 0 and runs >= 1, got warmup={warmup} runs={runs}')
    if not functions:
        raise InputError('nothing to time')
    sync = synchronize or (lambda: None)
    names = list(functions)
    samples: dict[str, list[float]] = {name: [] for name in names}
    steps = _step_names(warmup, runs, label)
    display = StepProgress(steps) if progress else None
    with display if display is not None else contextlib.nullcontext():
        for round_index, step in enumerate(steps):
            if display is not None:
                display.start(step)
            if prepare is not None:
                prepare()
            sync()
            for name in _round_order(names, round_index, warmup):
                start = time.perf_counter()
                functions[name]()
                sync()
                if round_index >= warmup:
                    samples[name].append(time.perf_counter() - start)
    return samples


def time_interleaved(functions: Mapping[str, Callable[[], object]], warmup: int = 10,
                     runs: int = 50, synchronize: Callable[[], None] | None = None,
                     progress: bool = True, label: str = '') -> dict[str, TimingStats]:
    """:func:`round_robin`, summarized: ``{name: TimingStats}``."""
    samples = round_robin(functions, warmup, runs, synchronize, progress=progress, label=label)
    return {name: TimingStats.from_seconds(values) for name, values in samples.items()}


def time_callable(fn: Callable[[], object], warmup: int = 10, runs: int = 50,
                  synchronize: Callable[[], None] | None = None, progress: bool = True,
                  label: str = '') -> TimingStats:
    """Times ``fn()`` after ``warmup`` untimed calls: :func:`time_interleaved` of one call."""
    return time_interleaved({label: fn}, warmup, runs, synchronize, progress, label)[label]


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of ``numerator[i] / denominator[i]`` (samples from the same round).

    Pairing cancels the load both saw in round ``i``; a ratio of medians would not.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f'paired samples need equal, non-zero lengths, got {len(numerator)} '
                         f'and {len(denominator)}')
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def spread_ms(samples: Sequence[float]) -> str:
    """``'min-max'`` of samples in seconds, as whole milliseconds (the tables' range column)."""
    return f'{min(samples) * 1e3:.0f}-{max(samples) * 1e3:.0f}'
