"""Runs a command line tool's ``main(argv)`` in-process (much faster than a subprocess, which
would re-import torch and the OpenMMLab stack for every call)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[3]
_loaded: dict[str, ModuleType] = {}


def load_tool(relative_path: str) -> ModuleType:
    """Imports ``tools/...py`` as a module (the tools directory is not a package)."""
    if relative_path not in _loaded:
        path = REPO / relative_path
        name = 'tool_' + relative_path.replace('/', '_').removesuffix('.py')
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[relative_path] = module
    return _loaded[relative_path]


def run_tool(relative_path: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Returns ``(exit status, stdout, stderr)`` of ``main(argv)``."""
    capsys.readouterr()  # drop anything printed before
    status = load_tool(relative_path).main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err
