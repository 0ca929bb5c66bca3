"""Shared logic of ``tools/train.py`` and ``tools/test.py``.

One CLI serves mmdet, mmseg and mmpretrain configs: MMEngine's ``Runner`` does the work and the
config's ``default_scope`` picks the few library-specific steps (how predictions are dumped, how
visualization is switched on, dataloader defaults). On top of the libraries' own tools this
module:

* checks the inputs before anything heavy starts (config path, data folders and annotation
  files, the RepNeXt arch, the pretrained backbone file, ``--resume`` / checkpoint paths) and
  reports each problem as one ``error:`` line that names the path and the fix;
* runs multi-process jobs on machines without CUDA (``tools/dist_train.sh`` with the gloo
  backend), which MMEngine 0.10.7 cannot: it calls ``torch.cuda.set_device`` and wraps the model
  with ``device_ids=[local_rank]`` unconditionally;
* writes checkpoints atomically and saves the random generator states with them, so an
  interrupted run leaves no truncated checkpoint and ``--resume`` continues bit for bit.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import os.path as osp
import sys
from typing import Any, Callable, Iterator, Sequence

from mmengine.config import Config, ConfigDict, DictAction

SUPPORTED_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
REPNEXT_TYPES = ('RepNeXt', 'repnext_mm.RepNeXt')
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'TorchSyncBN')
SPLITS = ('train', 'val', 'test')
SHAPES_HINT = 'generate it with `python tools/data/make_shapes.py` (writes data/shapes/)'
DATASET_HINTS = {
    'mmdet': 'put COCO 2017 there (annotations/instances_{train,val}2017.json, train2017/, '
             'val2017/)',
    'mmseg': 'put ADE20K there (ADEChallengeData2016: images/{training,validation}/, '
             'annotations/{training,validation}/)',
    'mmpretrain': 'put ImageNet-1K there (train/, val/, meta/{train,val}.txt)',
}


class ToolError(Exception):
    """A problem with the command line, the config or the files it names.

    The tools print it as one ``error: ...`` line (no traceback) and exit with status 2.
    """


# --------------------------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------------------------
def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='folder for logs, checkpoints and metrics '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. train_cfg.max_epochs=2 '
        'model.backbone.norm_cfg.type=BN; lists as key="[a,b]", list items as key.0.x=v')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher (tools/dist_*.sh pass "pytorch")')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='tools/train.py',
        description='Train a model from an mmdet, mmseg or mmpretrain config (the config\'s '
                    'default_scope selects the library).')
    parser.add_argument('config', help='config file, e.g. configs/mmdet/mask_rcnn_repnext_m4.py')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='CHECKPOINT',
        help='resume training (weights, optimizer, schedulers, random generators): from '
             'CHECKPOINT, or without it from the newest complete checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper; needs CUDA)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    _add_common_arguments(parser)
    return parser


def build_test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='tools/test.py',
        description='Evaluate a checkpoint on the test split of an mmdet, mmseg or mmpretrain '
                    'config (the config\'s default_scope selects the library).')
    parser.add_argument('config', help='config file the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint file (e.g. work_dirs/<name>/epoch_12.pth)')
    parser.add_argument('--out', help='also dump the predictions: a .pkl file for mmdet and '
                        'mmpretrain, a folder of label PNGs for mmseg')
    parser.add_argument('--show-dir', help='save images with predictions drawn into this folder '
                        '(relative paths land under <work_dir>/<timestamp>/)')
    _add_common_arguments(parser)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """Reads ``path``, applies ``--cfg-options`` and checks ``default_scope``.

    Raises:
        ToolError: The file does not exist, or its scope is not one the tools support.
    """
    if not osp.isfile(path):
        raise ToolError(f'config file {path!r} does not exist (relative to {os.getcwd()}); the '
                        'configs are under configs/mmdet, configs/mmseg and configs/mmpretrain')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise ToolError(f'{path} sets default_scope={scope!r}; tools/train.py and tools/test.py '
                        f'run configs whose default_scope is one of {SUPPORTED_SCOPES} (inherit '
                        "that library's default_runtime base)")
    return cfg


def set_work_dir(cfg: Config, config_path: str, work_dir: str | None) -> None:
    """``--work-dir`` > the config's ``work_dir`` > ``./work_dirs/<config file name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def iter_config_dicts(node: Any, key: str) -> Iterator[tuple[str, dict]]:
    """Yields ``(dotted key, dict)`` for every dict nested in ``node`` (itself included)."""
    if isinstance(node, dict):
        yield key, node
        for name, value in node.items():
            yield from iter_config_dicts(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from iter_config_dicts(value, f'{key}.{index}')


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def check_repnext_archs(cfg: Config) -> None:
    """Validates the ``arch`` of every RepNeXt in ``cfg.model`` before the model is built."""
    from repnext_mm.models.backbones.repnext import RepNeXt

    for key, node in iter_config_dicts(cfg.get('model'), 'model'):
        if node.get('type') in REPNEXT_TYPES:
            try:
                RepNeXt.parse_arch(node.get('arch', 'm1'))
            except ValueError as error:
                raise ToolError(f'{key}.arch: {error}') from None


def _is_local(path: str) -> bool:
    return '://' not in path


def check_pretrained_files(cfg: Config) -> None:
    """Every local ``init_cfg=dict(type='Pretrained', checkpoint=...)`` in the model must exist.

    Only training reads them (``init_weights``); testing a trained model never does.
    """
    for key, node in iter_config_dicts(cfg.get('model'), 'model'):
        if node.get('type') != 'Pretrained' or not isinstance(node.get('checkpoint'), str):
            continue
        checkpoint = node['checkpoint']
        if _is_local(checkpoint) and not osp.isfile(checkpoint):
            init_key = key if key.endswith('init_cfg') else key.rsplit('.', 1)[0]
            raise ToolError(
                f'{key}.checkpoint: pretrained weights {checkpoint!r} do not exist (relative to '
                f'{os.getcwd()}). Put an ImageNet-1K backbone checkpoint there (an mmpretrain '
                'checkpoint, or the authors\' release converted with '
                'tools/deploy/convert_official.py), point to one with '
                f'--cfg-options {key}.checkpoint=PATH, or train from scratch with '
                f'--cfg-options {init_key}=None')


def _dataset_configs(node: Any, key: str) -> Iterator[tuple[str, dict]]:
    """The leaf dataset dicts under a dataset config, through wrappers (Repeat, Concat, ...)."""
    if isinstance(node, (list, tuple)):
        for index, item in enumerate(node):
            yield from _dataset_configs(item, f'{key}.{index}')
    elif isinstance(node, dict):
        if 'dataset' in node:
            yield from _dataset_configs(node['dataset'], f'{key}.dataset')
        elif 'datasets' in node:
            yield from _dataset_configs(node['datasets'], f'{key}.datasets')
        else:
            yield key, node


def _missing_data_error(cfg: Config, what: str, path: str, root_key: str) -> ToolError:
    hint = SHAPES_HINT if 'shapes' in path else DATASET_HINTS.get(cfg.get('default_scope'), '')
    return ToolError(f'{what} {path!r} does not exist (relative to {os.getcwd()}): {hint}, or '
                     f'point the config elsewhere with --cfg-options {root_key}=DIR')


def check_data(cfg: Config, splits: Sequence[str]) -> None:
    """Checks the data folders and annotation files of the given splits before loading starts.

    Args:
        cfg: The config.
        splits: Any of ``'train'``, ``'val'``, ``'test'``: the dataloaders and evaluators named
            ``{split}_dataloader`` / ``{split}_evaluator`` to check.

    Raises:
        ToolError: A data root, data prefix folder or annotation file is missing.
    """
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for key, dataset in _dataset_configs(loader.get('dataset'), f'{split}_dataloader.dataset'):
            if dataset.get('backend_args'):
                continue  # remote storage: nothing to check locally
            data_root = dataset.get('data_root') or ''
            root_key = f'{key}.data_root'
            if data_root and not osp.isdir(data_root):
                raise _missing_data_error(cfg, f'data root of {key}', data_root, root_key)

            def resolve(path: str) -> str:
                return path if osp.isabs(path) else osp.join(data_root, path)

            ann_file = dataset.get('ann_file')
            if isinstance(ann_file, str) and ann_file and not osp.isfile(resolve(ann_file)):
                raise _missing_data_error(cfg, f'annotation file of {key}', resolve(ann_file),
                                          root_key)
            prefixes = dataset.get('data_prefix') or {}
            if isinstance(prefixes, str):
                prefixes = dict(img=prefixes)
            for name, prefix in prefixes.items():
                if isinstance(prefix, str) and prefix and not osp.isdir(resolve(prefix)):
                    raise _missing_data_error(cfg, f'{name} folder of {key}', resolve(prefix),
                                              root_key)
        evaluators = cfg.get(f'{split}_evaluator') or []
        for index, evaluator in enumerate([evaluators] if isinstance(evaluators, dict) else
                                          evaluators):
            ann_file = evaluator.get('ann_file') if isinstance(evaluator, dict) else None
            if (isinstance(ann_file, str) and _is_local(ann_file) and not osp.isfile(ann_file)
                    and not evaluator.get('backend_args')):
                key = f'{split}_evaluator' + ('' if isinstance(evaluators, dict) else f'.{index}')
                raise _missing_data_error(cfg, f'annotation file of {key}', ann_file,
                                          f'{key}.ann_file')


def check_checkpoint_file(path: str, what: str) -> None:
    if _is_local(path) and not osp.isfile(path):
        raise ToolError(f'{what} {path!r} does not exist (relative to {os.getcwd()})')


# --------------------------------------------------------------------------------------------
# Training options
# --------------------------------------------------------------------------------------------
def enable_amp(cfg: Config) -> None:
    import torch

    if not torch.cuda.is_available():
        raise ToolError('--amp needs a CUDA device: MMEngine\'s AmpOptimWrapper does not run on '
                        'CPU; drop --amp')
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
        return
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def enable_auto_scale_lr(cfg: Config) -> None:
    auto_scale_lr = cfg.get('auto_scale_lr')
    if not isinstance(auto_scale_lr, dict) or 'base_batch_size' not in auto_scale_lr:
        raise ToolError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) in the config '
                        '(N: the total batch size its lr was set for)')
    auto_scale_lr['enable'] = True


def latest_checkpoint(work_dir: str) -> str | None:
    """The checkpoint to auto-resume from: ``last_checkpoint``'s target, else the newest ``.pth``.

    MMEngine trusts the ``last_checkpoint`` file alone; if it is missing, empty or names a
    deleted file, the newest complete checkpoint in ``work_dir`` is used instead (checkpoints
    written through :mod:`repnext_mm.engine` are complete whenever they exist).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as file:
            target = file.read().strip()
        if target and osp.isfile(target):
            return target
    candidates = [path for path in glob.glob(osp.join(work_dir, '*.pth'))
                  if not osp.basename(path).startswith('.')]
    return max(candidates, key=osp.getmtime) if candidates else None


def set_resume(cfg: Config, resume: str | None) -> None:
    """``--resume`` (auto: newest checkpoint in the work dir) or ``--resume CHECKPOINT``."""
    if resume is None:
        return
    cfg.resume = True
    if resume == 'auto':
        cfg.load_from = latest_checkpoint(cfg.work_dir)
        if cfg.load_from is None:
            print(f'--resume: no checkpoint in {cfg.work_dir} yet; training starts from scratch',
                  file=sys.stderr)
    else:
        check_checkpoint_file(resume, '--resume checkpoint')
        cfg.load_from = resume


def use_atomic_checkpoints(cfg: Config) -> None:
    """Routes the ``CheckpointHook``'s writes through :class:`AtomicLocalBackend`.

    Left alone when the config already chooses a storage backend or a remote ``out_dir``.
    """
    from repnext_mm.engine import ATOMIC_BACKEND_NAME

    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not isinstance(hook, dict) or hook.get('type') not in ('CheckpointHook', None):
        return
    if hook.get('backend_args') or hook.get('file_client_args'):
        return
    if isinstance(hook.get('out_dir'), str) and not _is_local(hook['out_dir']):
        return
    hook['backend_args'] = dict(backend=ATOMIC_BACKEND_NAME)


# --------------------------------------------------------------------------------------------
# Distributed runs without CUDA
# --------------------------------------------------------------------------------------------
def setup_launcher(cfg: Config, launcher: str) -> None:
    """Sets ``cfg.launcher``; without CUDA, prepares a gloo process group MMEngine can use.

    MMEngine 0.10.7 initializes multi-process jobs with the config's backend (mmdet's default:
    nccl) after ``torch.cuda.set_device(local_rank)``, and wraps the model in DDP with
    ``device_ids=[local_rank]``: all three fail on a machine without CUDA. Here the process
    group is created first with gloo (MMEngine then skips its own initialization) and the DDP
    wrapper gets ``device_ids=None``, which is what DDP needs for a CPU model.
    """
    import torch
    import torch.distributed as torch_dist

    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ToolError(f'--launcher {launcher} needs CUDA on this machine; multi-process CPU '
                        'runs use --launcher pytorch (tools/dist_train.sh, tools/dist_test.sh)')
    for key, node in iter_config_dicts(cfg.get('model'), 'model'):
        if node.get('type') in SYNC_BN_TYPES:
            raise ToolError(f'{key}.type={node["type"]}: SyncBN runs on CUDA only; for a '
                            f'multi-process CPU run switch to plain BN with --cfg-options '
                            f'{key}.type=BN')
    if cfg.get('sync_bn'):
        raise ToolError(f'sync_bn={cfg.sync_bn!r} converts the model to SyncBN, which runs on CUDA '
                        'only; drop it with --cfg-options sync_bn=None')

    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if 'WORLD_SIZE' not in os.environ or 'RANK' not in os.environ:
        raise ToolError('--launcher pytorch expects the environment torchrun sets up (RANK, '
                        'WORLD_SIZE, MASTER_ADDR, MASTER_PORT); start multi-process runs with '
                        'tools/dist_train.sh or tools/dist_test.sh')
    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if 'timeout' in kwargs:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch_dist.init_process_group(backend=dist_cfg['backend'], **kwargs)

    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    else:
        wrapper['device_ids'] = None


# --------------------------------------------------------------------------------------------
# Library-specific steps, chosen by default_scope
# --------------------------------------------------------------------------------------------
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
        raise ToolError('--show-dir needs a visualization hook in default_hooks (inherit the '
                        "library's default_runtime base)")
    return hook


def _dump_pickle(runner: Any, out: str, metric_type: Callable[..., Any]) -> None:
    if not out.endswith(('.pkl', '.pickle')):
        raise ToolError(f'--out {out!r}: predictions are dumped as a pickle; name a .pkl file')
    runner.test_evaluator.metrics.append(metric_type(out_file_path=out))


def _mmdet_dump(runner: Any, out: str) -> None:
    from mmdet.evaluation import DumpDetResults  # encodes masks as RLE before dumping

    _dump_pickle(runner, out, DumpDetResults)


def _mmpretrain_dump(runner: Any, out: str) -> None:
    from mmengine.evaluator import DumpResults

    _dump_pickle(runner, out, DumpResults)


def _mmseg_out_to_config(cfg: Config, out: str) -> None:
    # mmseg's IoUMetric writes one label PNG per image into output_dir.
    if isinstance(cfg.test_evaluator, dict):
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    else:
        raise ToolError('--out for mmseg needs a single test_evaluator (IoUMetric)')


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
                 out_to_config: Callable[[Config, str], None] | None = None,
                 out_to_runner: Callable[[Any, str], None] | None = None,
                 dataloader_defaults: Callable[[Config], None] | None = None) -> None:
        self.show_dir = show_dir
        self.out_to_config = out_to_config
        self.out_to_runner = out_to_runner
        self.dataloader_defaults = dataloader_defaults or (lambda cfg: None)


TASK_ADAPTERS = {
    'mmdet': TaskAdapter(_mmdet_show_dir, out_to_runner=_mmdet_dump),
    'mmseg': TaskAdapter(_mmseg_show_dir, out_to_config=_mmseg_out_to_config),
    'mmpretrain': TaskAdapter(_mmpretrain_show_dir, out_to_runner=_mmpretrain_dump,
                              dataloader_defaults=_mmpretrain_dataloader_defaults),
}


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------
def build_runner(cfg: Config) -> Any:
    """Builds the runner (``runner_type`` if the config names one) with the tools' extra hook."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from repnext_mm.engine import RNGStateHook

    if cfg.get('default_scope') == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.register_hook(RNGStateHook())
    return runner


def train(argv: Sequence[str] | None = None) -> None:
    """``tools/train.py``."""
    args = parse_args(build_train_parser(), argv)
    cfg = load_config(args.config, args.cfg_options)
    set_work_dir(cfg, args.config, args.work_dir)
    TASK_ADAPTERS[cfg.default_scope].dataloader_defaults(cfg)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    set_resume(cfg, args.resume)
    check_repnext_archs(cfg)
    check_data(cfg, ['train', 'val'] if cfg.get('val_cfg') else ['train'])
    # MMEngine runs init_weights (the pretrained load) before it resumes, so even a resumed run
    # reads the pretrained file.
    check_pretrained_files(cfg)
    if cfg.get('load_from'):
        check_checkpoint_file(cfg.load_from, 'load_from checkpoint')
    use_atomic_checkpoints(cfg)
    setup_launcher(cfg, args.launcher)
    build_runner(cfg).train()


def test(argv: Sequence[str] | None = None) -> dict:
    """``tools/test.py``; returns the metrics."""
    args = parse_args(build_test_parser(), argv)
    cfg = load_config(args.config, args.cfg_options)
    set_work_dir(cfg, args.config, args.work_dir)
    adapter = TASK_ADAPTERS[cfg.default_scope]
    adapter.dataloader_defaults(cfg)
    check_checkpoint_file(args.checkpoint, 'checkpoint')
    cfg.load_from = args.checkpoint
    check_repnext_archs(cfg)
    check_data(cfg, ['test'])
    if args.show_dir:
        adapter.show_dir(cfg, args.show_dir)
    if args.out and adapter.out_to_config:
        adapter.out_to_config(cfg, args.out)
    setup_launcher(cfg, args.launcher)
    runner = build_runner(cfg)
    if args.out and adapter.out_to_runner:
        adapter.out_to_runner(runner, args.out)
    metrics = runner.test()
    if runner.rank == 0:
        print('test metrics: ' + json.dumps(metrics, default=float))
    return metrics


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Runs a tool's main; a :class:`ToolError` becomes one ``error:`` line and exit status 2."""
    try:
        main(argv)
    except ToolError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0
