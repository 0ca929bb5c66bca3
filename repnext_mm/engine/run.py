"""Training and testing from a config: what ``tools/train.py`` and ``tools/test.py`` call.

MMEngine's ``Runner`` does the work; before it starts, every input is checked (config, data,
pretrained and checkpoint files, ``--out``; :mod:`repnext_mm.apis`), and the runner loads
checkpoints strictly (:mod:`.runner`), so a metric printed here comes from a completely loaded
model.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from mmengine.config import Config

from repnext_mm.apis.checkpoint import fused_checkpoint_options, read_checkpoint
from repnext_mm.apis.config import load_config, lookup_key, set_work_dir
from repnext_mm.apis.inputs import check_checkpoint_file, check_data, check_pretrained_files
from .launcher import setup_launcher
from .resume import set_resume
from .runner import (allowed_mismatch_of, build_runner, discard_run_folder_on_input_error,
                     use_atomic_checkpoints)
from .tasks import TASK_ADAPTERS, enable_amp, enable_auto_scale_lr


def apply_fused_checkpoint_options(cfg: Config, checkpoint_path: str) -> None:
    """Builds the fused structure for a checkpoint written by the reparameterize tool.

    Its ``meta`` records the ``--cfg-options`` that build the fused model; they are applied
    (and said) unless the config already sets them. Only the meta is needed here: the tensors are
    mapped, not read (the runner reads them when it loads the model).
    """
    options = fused_checkpoint_options(read_checkpoint(checkpoint_path, mmap=True))
    if not options:
        return
    missing = {k: v for k, v in options.items() if lookup_key(cfg, k.split('.')) != v}
    if missing:
        cfg.merge_from_dict(missing)
        print(f'{checkpoint_path} is a fused checkpoint: building the fused model with '
              + ' '.join(f'{k}={v}' for k, v in missing.items()), file=sys.stderr)


def train(config: str, work_dir: str | None = None, resume: str | None = None,
          amp: bool = False, auto_scale_lr: bool = False,
          cfg_options: dict[str, Any] | None = None, launcher: str = 'none') -> None:
    """Trains the model of ``config`` (``tools/train.py``).

    Args:
        config: Config file path.
        work_dir: Output folder (default: the config's ``work_dir``, else
            ``./work_dirs/<config name>``).
        resume: ``'auto'`` (the newest checkpoint in the work dir) or a checkpoint path.
        amp: Automatic mixed precision (CUDA only).
        auto_scale_lr: Scale the lr by the total batch size (``auto_scale_lr`` in the config).
        cfg_options: Config overrides, as ``--cfg-options``.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Raises:
        InputError: A bad config, option, data path or checkpoint.
    """
    cfg = load_config(config, cfg_options)
    set_work_dir(cfg, config, work_dir)
    TASK_ADAPTERS[cfg.default_scope].dataloader_defaults(cfg)
    if amp:
        enable_amp(cfg)
    if auto_scale_lr:
        enable_auto_scale_lr(cfg)
    set_resume(cfg, resume)
    check_data(cfg, ['train', 'val'] if cfg.get('val_cfg') else ['train'])
    # MMEngine runs init_weights (the pretrained load) before it resumes, so even a resumed run
    # reads the pretrained file.
    check_pretrained_files(cfg)
    if cfg.get('load_from'):
        check_checkpoint_file(cfg.load_from, 'load_from checkpoint')
    allowed_mismatch_of(cfg)
    use_atomic_checkpoints(cfg)
    setup_launcher(cfg, launcher)
    with discard_run_folder_on_input_error(cfg.work_dir):
        build_runner(cfg).train()


def test(config: str, checkpoint: str, work_dir: str | None = None, out: str | None = None,
         show_dir: str | None = None, cfg_options: dict[str, Any] | None = None,
         launcher: str = 'none') -> dict:
    """Evaluates ``checkpoint`` on the test split of ``config`` (``tools/test.py``).

    Args:
        config: Config file path.
        checkpoint: Checkpoint file; a fused one (reparameterize tool) builds the fused model.
        work_dir: Output folder for logs and metrics.
        out: Dump predictions: a ``.pkl`` file (mmdet, mmpretrain) or a folder (mmseg).
        show_dir: Save images with predictions drawn into this folder.
        cfg_options: Config overrides, as ``--cfg-options``.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Returns:
        The metrics (also printed as a last ``test metrics: {...}`` line by rank 0).

    Raises:
        InputError: A bad config, option, data path, ``out`` or checkpoint (including one that
            does not fit the model).
    """
    cfg = load_config(config, cfg_options)
    set_work_dir(cfg, config, work_dir)
    adapter = TASK_ADAPTERS[cfg.default_scope]
    adapter.dataloader_defaults(cfg)
    check_checkpoint_file(checkpoint, 'checkpoint')
    if out:
        adapter.check_out(out)
    apply_fused_checkpoint_options(cfg, checkpoint)
    cfg.load_from = checkpoint
    cfg.resume = False
    check_data(cfg, ['test'])
    if show_dir:
        adapter.show_dir(cfg, show_dir)
    if out and adapter.out_to_config:
        adapter.out_to_config(cfg, out)
    setup_launcher(cfg, launcher)
    with discard_run_folder_on_input_error(cfg.work_dir):
        runner = build_runner(cfg)
        if out and adapter.out_to_runner:
            adapter.out_to_runner(runner, out)
        metrics = runner.test()
    if runner.rank == 0:
        print('test metrics: ' + json.dumps(metrics, default=float))
    return metrics
