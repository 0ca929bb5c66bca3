"""Fixtures of the tool tests: "trained" checkpoints of the shapes configs and files in the
authors' published layouts (shared with tests/deploy)."""
import pytest
import torch

from tests.deploy.conftest import releases, trained_checkpoints  # noqa: F401


@pytest.fixture
def one_cpu_thread():
    """One torch thread: on 2 shared cores OpenMP's spinning threads made training ~100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
