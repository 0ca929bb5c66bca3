"""The deploy tests' fixtures (trained checkpoints of the shapes configs), shared with the CLI tests."""
from tests.deploy.conftest import trained_checkpoints  # noqa: F401
