"""The one timer: statistics, round-robin order, warm-up, the prepare hook, paired ratios."""
import types

import pytest

from repnext_mm.benchmark import timing
from repnext_mm.benchmark.timing import (TimingStats, paired_ratio, round_robin, spread_ms,
                                         time_callable, time_interleaved)
from repnext_mm.utils.errors import InputError


class FakeClock:
    """A clock that only the fake calls advance, so the timer's samples are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def work(self, seconds: float):
        def call() -> None:
            self.now += seconds
        return call


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, 'time', types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_timing_stats_median_and_iqr():
    stats = TimingStats.from_seconds([0.004, 0.001, 0.002, 0.003, 0.100])
    assert stats.runs == 5
    assert stats.median_ms == pytest.approx(3.0)
    assert stats.p25_ms == pytest.approx(2.0)
    assert stats.p75_ms == pytest.approx(4.0)
    assert stats.iqr_ms == pytest.approx(2.0)  # the 100 ms outlier does not move it
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(100.0)


def test_time_callable_warms_up_then_times():
    calls = []
    stats = time_callable(lambda: calls.append(1), warmup=3, runs=7, progress=False)
    assert len(calls) == 10 and stats.runs == 7
    with pytest.raises(InputError, match='runs >= 1'):
        time_callable(lambda: None, warmup=1, runs=0, progress=False)


def test_time_interleaved_alternates_the_calls():
    calls = []
    stats = time_interleaved({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
                             warmup=1, runs=4, progress=False)
    assert calls == ['a', 'b'] + ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']
    assert set(stats) == {'a', 'b'} and stats['a'].runs == stats['b'].runs == 4


def test_round_robin_keeps_warmup_order_and_reverses_timed_rounds():
    calls = []
    functions = {name: (lambda n=name: calls.append(n)) for name in 'abc'}
    round_robin(functions, warmup=2, runs=3, progress=False)
    assert calls == list('abc' 'abc' 'abc' 'cba' 'abc')


def test_round_robin_samples_each_call_per_round(clock):
    # Each round's "load" scales both calls alike: the slow call always takes 3x the fast one.
    loads = iter([50.0, 50.0, 1.0, 1.0, 8.0, 8.0, 2.0, 2.0])  # warm-up round first
    slow = lambda: clock.work(3 * next(loads))()  # noqa: E731
    fast = lambda: clock.work(next(loads))()  # noqa: E731
    samples = round_robin({'slow': slow, 'fast': fast}, warmup=1, runs=3, progress=False)
    # Round 2 runs fast first, so it draws the first of that round's loads: same value either way.
    assert samples == {'slow': [3.0, 24.0, 6.0], 'fast': [1.0, 8.0, 2.0]}
    assert paired_ratio(samples['slow'], samples['fast']) == 3.0


def test_prepare_runs_before_every_round_outside_the_timed_interval(clock):
    events = []

    def prepare() -> None:
        events.append('prepare')
        clock.now += 100.0  # e.g. loading a batch: must not show in the samples

    def call() -> None:
        events.append('call')
        clock.now += 1.0

    samples = round_robin({'call': call}, warmup=1, runs=2, prepare=prepare, progress=False)
    assert events == ['prepare', 'call'] * 3
    assert samples == {'call': [1.0, 1.0]}


def test_paired_ratio_is_the_median_of_per_round_ratios():
    numerator, denominator = [1.0, 4.0, 9.0], [1.0, 1.0, 3.0]
    assert paired_ratio(numerator, denominator) == 3.0  # rounds: 1x, 4x, 3x
    # not the ratio of the medians (4 / 1), which mixes rounds with different loads
    assert paired_ratio(numerator, denominator) != 4.0
    with pytest.raises(ValueError, match='equal'):
        paired_ratio([1.0], [1.0, 2.0])


def test_round_robin_rejects_nothing_to_time_and_shows_progress(capsys):
    with pytest.raises(InputError, match='nothing to time'):
        round_robin({}, warmup=0, runs=1, progress=False)
    round_robin({'x': lambda: None}, warmup=1, runs=2, progress=True, label='tiny')
    err = capsys.readouterr().err
    assert 'tiny: warm-up 1/1' in err and 'tiny: round 2/2' in err


def test_spread_is_min_to_max_in_milliseconds():
    assert spread_ms([0.0123, 0.2, 0.05]) == '12-200'
