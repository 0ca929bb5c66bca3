import io
import re

import pytest

from repnext_mm.utils.progress import StepProgress

STEPS = ['building', 'converting']


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    with StepProgress(STEPS, stream=stream) as progress:
        progress.start('building')
        progress.start('converting')
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r'\[1/2\] building \([\d.]+ s elapsed\)', lines[0])
    assert re.fullmatch(r'\[2/2\] converting \([\d.]+ s elapsed\)', lines[1])
    assert re.fullmatch(r'done in [\d.]+ s', lines[2])


def test_live_bar_on_a_terminal():
    stream = io.StringIO()
    with StepProgress(STEPS, stream=stream, force_terminal=True) as progress:
        progress.start('building')
        progress.start('converting')
    drawn = stream.getvalue()
    assert 'done' in drawn and '2/2' in drawn  # the final frame: every step complete
    assert '\x1b[' in drawn  # drawn with terminal control codes, not as log lines


def test_steps_must_start_in_order():
    with StepProgress(STEPS, stream=io.StringIO()) as progress:
        with pytest.raises(ValueError, match="'converting' started out of order; expected "
                                             "'building'"):
            progress.start('converting')
        progress.start('building')
        progress.start('converting')
        with pytest.raises(ValueError, match='expected None'):
            progress.start('building')


def test_a_failed_step_is_not_reported_done():
    stream = io.StringIO()
    with pytest.raises(RuntimeError):
        with StepProgress(STEPS, stream=stream) as progress:
            progress.start('building')
            raise RuntimeError('conversion failed')
    assert '[1/2] building' in stream.getvalue() and 'done' not in stream.getvalue()


def test_needs_steps():
    with pytest.raises(ValueError, match='at least one step'):
        StepProgress([])
