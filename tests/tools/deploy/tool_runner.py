"""Runs a command line tool's ``main(argv)`` in-process (much faster than a subprocess, which
would re-import torch and the OpenMMLab stack for every call)."""
from __future__ import annotations

from tests.helpers import REPO, load_tool  # noqa: F401  (re-exported for the deploy tool tests)


def run_tool(relative_path: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Returns ``(exit status, stdout, stderr)`` of ``main(argv)``."""
    capsys.readouterr()  # drop anything printed before
    status = load_tool(relative_path).main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err
