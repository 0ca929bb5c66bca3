"""The few steps that differ between mmdet, mmseg and mmpretrain, chosen by ``default_scope``.

How ``--show-dir`` switches on each library's visualization hook, how ``--out`` dumps
predictions (and is checked before the run), and the dataloader defaults mmpretrain's own tools
fill in. Predictions are dumped atomically: a run that fails while dumping (a full disk) leaves
the previous ``--out`` or nothing, never a truncated file under the final name.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
from pathlib import Path
from typing import Any, Callable

from mmengine.config import Config

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write, check_output_dir, temporary_path

SPLITS = ('train', 'val', 'test')


def _mmdet_show_dir(cfg: Config, show_dir: str) -> None:
    hook = _visualization_hook(cfg)
    hook['draw'] = True
    hook['test_out_dir'] = show_dir


def _mmseg_show_dir(cfg: Config, show_dir: str) -> None:
    hook = _visualization_hook(cfg)
    hook['draw'] = True
    hook['interval'] = 1
    cfg.visualizer['save_dir'] = show_dir


def _mmpretrain_show_dir(cfg: Config, show_dir: str) -> None:
    hook = _visualization_hook(cfg)
    hook['enable'] = True
    hook['out_dir'] = show_dir
    hook['interval'] = 1


def _visualization_hook(cfg: Config) -> dict:
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if not isinstance(hook, dict):
        raise InputError('--show-dir needs a visualization hook in default_hooks (inherit the '
                        "library's default_runtime base)")
    return hook


def _check_pickle_out(out: str) -> None:
    if osp.isdir(out):
        raise InputError(f'--out {out!r} is a directory; predictions are dumped into one .pkl '
                         'file: name a file, e.g. results.pkl')
    if not out.endswith(('.pkl', '.pickle')):
        raise InputError(f'--out {out!r}: predictions are dumped as a pickle; name a .pkl file')
    parent = osp.dirname(out)
    if parent and not osp.isdir(parent):
        raise InputError(f'--out {out!r}: the folder {parent!r} does not exist; create it first')
    check_output_dir(parent or '.', '--out folder')


def _check_folder_out(out: str) -> None:
    if osp.exists(out) and not osp.isdir(out):
        raise InputError(f'--out {out!r} is a file; mmseg writes one label PNG per image into a '
                         'folder: name a folder')
    check_output_dir(out, '--out')


def _atomic_dump_class(base: type) -> type:
    """``base`` (MMEngine's ``DumpResults`` or a subclass) dumping through :func:`atomic_write`.

    ``DumpResults`` writes the pickle straight under its final name: a full disk left a
    truncated ``--out`` file that looked like a result.
    """
    from mmengine import fileio
    from mmengine.logging import print_log

    def compute_metrics(self: Any, results: list) -> dict:
        # fileio.dump picks the pickle format by the suffix, which the temporary keeps
        atomic_write(self.out_file_path, lambda tmp: fileio.dump(results, str(tmp)))
        print_log(f'Results has been saved to {self.out_file_path}.', logger='current')
        return {}

    return type(f'Atomic{base.__name__}', (base,), {'compute_metrics': compute_metrics})


def _dump_pickle(runner: Any, out: str, metric_type: type) -> None:
    runner.test_evaluator.metrics.append(_atomic_dump_class(metric_type)(out_file_path=out))


def _mmdet_dump(runner: Any, out: str) -> None:
    from mmdet.evaluation import DumpDetResults  # encodes masks as RLE before dumping

    _dump_pickle(runner, out, DumpDetResults)


def _mmpretrain_dump(runner: Any, out: str) -> None:
    from mmengine.evaluator import DumpResults

    _dump_pickle(runner, out, DumpResults)


class StagedFolder:
    """A folder output written into a hidden sibling first, moved into place on success.

    The files land in ``final`` only when the run succeeded (each by ``os.replace``, so a file
    of an earlier run is replaced whole and files the run did not write are kept, as when the
    library wrote into ``final`` itself); a failed run leaves ``final`` as it was. In a
    multi-process run every process has a staging folder of its own (created here: mmseg
    creates its ``output_dir`` in the main process only) and commits it.
    """

    def __init__(self, final: str | os.PathLike) -> None:
        self.final = Path(final)
        self.staging = temporary_path(self.final)
        self.staging.mkdir(parents=True)

    def commit(self) -> None:
        """Moves the staged files into :attr:`final` and removes the staging folder."""
        for root, _, files in os.walk(self.staging):
            target = self.final / Path(root).relative_to(self.staging)
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                os.replace(Path(root) / name, target / name)
        shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self) -> None:
        """Removes the staging folder and what was written into it."""
        shutil.rmtree(self.staging, ignore_errors=True)


def _mmseg_out_to_config(cfg: Config, out: str) -> StagedFolder:
    # mmseg's IoUMetric writes one label PNG per image into output_dir.
    if not isinstance(cfg.test_evaluator, dict):
        raise InputError('--out for mmseg needs a single test_evaluator (IoUMetric)')
    staged = StagedFolder(out)
    cfg.test_evaluator['output_dir'] = str(staged.staging)
    cfg.test_evaluator['keep_results'] = True
    return staged


def _mmpretrain_dataloader_defaults(cfg: Config) -> None:
    # mmpretrain's own tools fill these in; its configs rely on default_collate.
    import torch

    for split in SPLITS:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        loader.setdefault('collate_fn', dict(type='default_collate'))
        loader.setdefault('pin_memory', torch.cuda.is_available())
        loader.setdefault('persistent_workers', loader.get('num_workers', 0) > 0)


class TaskAdapter:
    """The library-specific steps of one ``default_scope``."""

    def __init__(self, show_dir: Callable[[Config, str], None],
                 check_out: Callable[[str], None],
                 out_to_config: Callable[[Config, str], StagedFolder] | None = None,
                 out_to_runner: Callable[[Any, str], None] | None = None,
                 dataloader_defaults: Callable[[Config], None] | None = None,
                 show_dir_in_log_dir: bool = False) -> None:
        """
        Args:
            show_dir: Switches the visualization hook on, drawing into the given folder.
            check_out: Refuses a ``--out`` the library cannot write (before any work).
            out_to_config: Dumps predictions through the config; returns the staged folder
                the caller commits after the run.
            out_to_runner: Dumps predictions through the built runner.
            dataloader_defaults: Fills in what the library's own tools fill in.
            show_dir_in_log_dir: The library puts a relative ``--show-dir`` under the run's
                (new) dated log folder, not the current folder.
        """
        self.show_dir = show_dir
        self.check_out = check_out
        self.out_to_config = out_to_config
        self.out_to_runner = out_to_runner
        self.dataloader_defaults = dataloader_defaults or (lambda cfg: None)
        self.show_dir_in_log_dir = show_dir_in_log_dir

    def check_show_dir(self, show_dir: str) -> None:
        """Refuses a ``--show-dir`` that cannot be a folder, before the test runs."""
        if self.show_dir_in_log_dir and not osp.isabs(show_dir):
            return  # inside the dated log folder the run creates; the work dir is checked
        check_output_dir(show_dir, '--show-dir')


TASK_ADAPTERS = {
    'mmdet': TaskAdapter(_mmdet_show_dir, _check_pickle_out, out_to_runner=_mmdet_dump,
                         show_dir_in_log_dir=True),
    'mmseg': TaskAdapter(_mmseg_show_dir, _check_folder_out, out_to_config=_mmseg_out_to_config),
    'mmpretrain': TaskAdapter(_mmpretrain_show_dir, _check_pickle_out,
                              out_to_runner=_mmpretrain_dump,
                              dataloader_defaults=_mmpretrain_dataloader_defaults),
}


def enable_amp(cfg: Config) -> None:
    import torch

    if not torch.cuda.is_available():
        raise InputError('--amp needs a CUDA device: MMEngine\'s AmpOptimWrapper does not run on '
                        'CPU; drop --amp')
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        return
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def enable_auto_scale_lr(cfg: Config) -> None:
    auto_scale_lr = cfg.get('auto_scale_lr')
    if not isinstance(auto_scale_lr, dict) or 'base_batch_size' not in auto_scale_lr:
        raise InputError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) in the config '
                        '(N: the total batch size its lr was set for)')
    auto_scale_lr['enable'] = True
