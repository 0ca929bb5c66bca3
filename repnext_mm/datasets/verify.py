"""The full data check: every image and label map decoded, in parallel processes.

``tools/misc/verify_dataset.py`` lists the files (:func:`repnext_mm.apis.inputs.iter_data_files`) and
calls :func:`decode_all`; the check before each run only reads the files' first bytes
(:func:`repnext_mm.datasets.checks.quick_problem`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Sequence

from .checks import DataFile, decode_problem

#: Files per task sent to a worker process: large enough that the transfer costs little, small
#: enough that the progress bar moves smoothly.
CHUNK_SIZE = 64
#: OpenCV's LOG_LEVEL_SILENT (``cv2.setLogLevel``).
OPENCV_SILENT = 0


def default_workers() -> int:
    """One process per CPU (``os.cpu_count()``)."""
    return os.cpu_count() or 1


def _quiet_worker() -> None:
    """OpenCV in a worker process: one thread (the processes are the parallelism) and no
    warning per broken file on stderr (each problem is in the list)."""
    # No exception may leave a Pool initializer: the pool would replace the worker forever.
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)
        cv2.setLogLevel(OPENCV_SILENT)


def _decode_chunk(chunk: Sequence[tuple[str, str]]) -> list[str | None]:
    return [decode_problem(path, kind) for path, kind in chunk]


def _chunks(files: Sequence[DataFile]) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(files), CHUNK_SIZE):
        yield [(f.path, f.kind) for f in files[start:start + CHUNK_SIZE]]


def decode_all(files: Sequence[DataFile], workers: int | None = None,
               progress: bool = True) -> list[tuple[DataFile, str]]:
    """Decodes every file; returns ``(file, problem)`` for each one that fails, in order.

    Args:
        files: The files to decode.
        workers: Processes (default :func:`default_workers`); 1 decodes in this process.
        progress: Draw a progress bar on stderr.
    """
    workers = workers or default_workers()
    bar = None
    if progress and files:
        from mmengine.utils import ProgressBar

        bar = ProgressBar(len(files), file=sys.stderr)
    if workers == 1:
        import cv2

        previous = cv2.setLogLevel(OPENCV_SILENT)
        try:
            results = _collect(map(_decode_chunk, _chunks(files)), bar)
        finally:
            cv2.setLogLevel(previous)
    else:
        import multiprocessing

        # Spawned, not forked: a fork of a process that holds other libraries' thread pools
        # (OpenVINO's, when called from Python after a benchmark) can crash in the child.
        context = multiprocessing.get_context('spawn')
        with context.Pool(workers, initializer=_quiet_worker) as pool:
            results = _collect(pool.imap(_decode_chunk, _chunks(files)), bar)
    if bar is not None:
        print(file=sys.stderr)  # ProgressBar leaves its line open
    return [(file, problem) for file, problem in zip(files, results) if problem]


def _collect(chunks: Iterator[list[str | None]], bar) -> list[str | None]:
    results: list[str | None] = []
    for chunk in chunks:
        results.extend(chunk)
        if bar is not None:
            bar.update(len(chunk))
    return results
