"""Samples that fail to load during a run: stop with one line, or skip them by opt-in.

The data check before a run (:mod:`repnext_mm.datasets.checks`) reads the first bytes of every
file; a file that is broken further in, or that turns bad while the run goes on, fails only when
the pipeline decodes it (mmcv's ``LoadImageFromFile`` raises; MMEngine's ``BaseDataset`` passes
the exception on). :func:`guard_dataloaders` wraps each dataloader's dataset in
:class:`GuardedDataset`, which turns that exception into one :class:`UnreadableSampleError`
naming the file and the sample index, or, with ``skip_unreadable_samples = True`` in the config,
loads another sample instead and logs a warning for every sample skipped, with a running count.
Never a silent skip by default.
"""
from __future__ import annotations

import ast
import logging
import multiprocessing
import os.path as osp
import re
from typing import Any

from mmengine.registry import DATASETS

from repnext_mm.utils.errors import InputError
from .checks import VERIFY_COMMAND

#: Top-level config key: True skips samples that fail to load (each one logged) instead of
#: stopping the run.
SKIP_UNREADABLE_KEY = 'skip_unreadable_samples'
#: The dataloaders whose datasets are guarded.
GUARDED_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
#: How to list every unreadable file at once.
VERIFY_HINT = f'{VERIFY_COMMAND} lists every unreadable file'
#: Data info keys that name a sample's files (mmdet, mmseg, mmpretrain).
PATH_KEYS = ('img_path', 'seg_map_path')

# "sample 17 of train_dataloader.dataset, file 'data/x.png', ...": the start of every message,
# parsed back when PyTorch re-raises the error from a DataLoader worker with only its text.
_MESSAGE_HEAD = re.compile(r"sample (?P<index>\d+) of (?P<key>\S+), file (?P<path>'(?:[^'\\]|\\.)*'"
                           r'|"(?:[^"\\]|\\.)*")')


class UnreadableSampleError(InputError):
    """A sample's file could not be read while the run was going (it passed the check before).

    Args:
        message: One line naming the sample, its file and the original error. PyTorch's
            DataLoader re-raises a worker's exception as ``UnreadableSampleError(text)`` where the
            text is "Caught UnreadableSampleError in DataLoader worker process N. Original
            Traceback ..."; the original one-line message (and ``path``, ``index``) is recovered
            from it.
        path: The file that failed.
        index: The sample's index in the dataset.
    """

    def __init__(self, message: str, path: str | None = None, index: int | None = None) -> None:
        message = _original_message(message)
        if path is None or index is None:
            match = _MESSAGE_HEAD.search(message)
            if match:
                path = ast.literal_eval(match['path']) if path is None else path
                index = int(match['index']) if index is None else index
        super().__init__(message)
        self.path = path
        self.index = index


def _original_message(text: str) -> str:
    """The message inside a DataLoader worker's re-raised text (``text`` itself otherwise)."""
    if not text.startswith('Caught ') or '\nOriginal Traceback' not in text:
        return text
    prefix = f'{UnreadableSampleError.__module__}.{UnreadableSampleError.__qualname__}: '
    for line in reversed(text.splitlines()):
        if line.startswith(prefix):
            return line[len(prefix):]
    return ' '.join(text.split())  # an unexpected layout: still one line


def _one_line(error: BaseException) -> str:
    text = ' '.join(str(error).split())
    text = text if len(text) <= 300 else text[:297] + '...'
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


@DATASETS.register_module()
class GuardedDataset:
    """A dataset whose samples that fail to load stop the run with one line, or are skipped.

    Everything else (``metainfo``, ``get_data_info``, ``full_init``, any attribute samplers and
    evaluators read) is the wrapped dataset's.

    Args:
        dataset: The dataset, or its config.
        key: Its config key, for messages (e.g. ``train_dataloader.dataset``).
        skip_unreadable: Load another sample (the next index) instead of stopping; each skip is
            logged with the count so far (counted across DataLoader worker processes).
    """

    def __init__(self, dataset: Any, key: str = 'dataset', skip_unreadable: bool = False) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.key = key
        self.skip_unreadable = bool(skip_unreadable)
        # Shared with forked DataLoader workers, so the count is the run's, not one worker's.
        self._skipped = multiprocessing.Value('l', 0) if self.skip_unreadable else None

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        tried = 0
        while True:
            try:
                return self.dataset[index]
            except Exception as error:  # noqa: BLE001  (any loader's failure; said in one line)
                path = self._failed_path(index, error)
                what = (f'sample {index} of {self.key}, file {path!r}, could not be loaded '
                        f'({_one_line(error)})')
            if not self.skip_unreadable:
                raise UnreadableSampleError(
                    f'{what}; replace the file ({VERIFY_HINT}) or set {SKIP_UNREADABLE_KEY} = True '
                    'in the config to skip such samples', path, index) from None
            tried += 1
            self._log_skip(what)
            if tried >= len(self.dataset):
                raise UnreadableSampleError(
                    f'every sample of {self.key} failed to load, the last: {what}; '
                    f'{VERIFY_HINT}', path, index)
            index = (index + 1) % len(self.dataset)

    def _failed_path(self, index: int, error: Exception) -> str:
        """The sample's file the error is about: the one it names, else the first that is not
        a readable file, else the image."""
        try:
            info = self.dataset.get_data_info(index)
        except Exception:  # noqa: BLE001  (the index itself is what failed)
            return '?'
        paths = [info[k] for k in PATH_KEYS if isinstance(info.get(k), str)]
        if not paths:
            return '?'
        text = str(error)
        named = [p for p in paths if p in text]
        unreadable = [p for p in paths if not osp.isfile(p) or osp.getsize(p) == 0]
        return (named or unreadable or paths)[0]

    def _log_skip(self, what: str) -> None:
        from mmengine.logging import MMLogger

        with self._skipped.get_lock():
            self._skipped.value += 1
            count = self._skipped.value
        MMLogger.get_current_instance().log(
            logging.WARNING, f'skipped: {what}; {count} unreadable sample{"s" * (count > 1)} '
            f'skipped so far ({SKIP_UNREADABLE_KEY} = True)')

    @property
    def skipped(self) -> int:
        """How many samples were skipped so far (0 unless ``skip_unreadable``)."""
        return self._skipped.value if self._skipped is not None else 0


def guard_dataloaders(cfg: Any) -> None:
    """Wraps the dataset of every ``{train,val,test}_dataloader`` of ``cfg`` in
    :class:`GuardedDataset` (in place; a dataset already guarded gets the current switch).

    :data:`SKIP_UNREADABLE_KEY` at the top level of ``cfg`` turns skipping on.
    """
    skip = bool(cfg.get(SKIP_UNREADABLE_KEY, False))
    for name in GUARDED_LOADERS:
        loader = cfg.get(name)
        if not loader or not isinstance(loader.get('dataset'), dict):
            continue
        dataset = loader['dataset']
        if dataset.get('type') in (GuardedDataset.__name__, GuardedDataset):
            dataset['skip_unreadable'] = skip
            continue
        loader['dataset'] = dict(type=GuardedDataset.__name__, dataset=dataset,
                                 key=f'{name}.dataset', skip_unreadable=skip)
