"""Fixtures for the whole suite."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def no_logger_writes_to_a_closed_stream():
    """Drops MMLogger handlers left bound to an earlier test's captured (now closed) stream.

    Runners built in-process keep their logger (MMLogger instances live for the process); a
    later log call on a closed stream prints "--- Logging error ---" and a traceback to stderr,
    which the tests that assert "one error line, no traceback" would then see.
    """
    from mmengine.logging import MMLogger

    for logger in list(MMLogger._instance_dict.values()):
        for handler in list(logger.handlers):
            if getattr(getattr(handler, 'stream', None), 'closed', False):
                logger.removeHandler(handler)
    yield


@pytest.fixture
def one_cpu_thread():
    """One torch thread: on 2 shared cores a second OpenMP thread spin-waits whenever another
    process wants the core, which made training and forward/backward passes many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
