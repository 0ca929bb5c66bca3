"""Fixtures of the tool tests: "trained" checkpoints of the shapes configs and files in the
authors' published layouts (shared with tests/deploy)."""
from tests.deploy.conftest import releases, trained_checkpoints  # noqa: F401

