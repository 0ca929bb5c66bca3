"""Multi-process runs on machines without CUDA (``tools/dist_train.sh`` over gloo)."""
from __future__ import annotations

import datetime
import os

from mmengine.config import Config, ConfigDict

from repnext_mm.apis.config import iter_config_dicts
from repnext_mm.utils.errors import InputError

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'TorchSyncBN')


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
        raise InputError(f'--launcher {launcher} needs CUDA on this machine; multi-process CPU '
                        'runs use --launcher pytorch (tools/dist_train.sh, tools/dist_test.sh)')
    for key, node in iter_config_dicts(cfg.get('model'), 'model'):
        if node.get('type') in SYNC_BN_TYPES:
            raise InputError(f'{key}.type={node["type"]}: SyncBN runs on CUDA only; for a '
                            f'multi-process CPU run switch to plain BN with --cfg-options '
                            f'{key}.type=BN')
    if cfg.get('sync_bn'):
        raise InputError(f'sync_bn={cfg.sync_bn!r} converts the model to SyncBN, which runs on CUDA '
                        'only; drop it with --cfg-options sync_bn=None')

    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if 'WORLD_SIZE' not in os.environ or 'RANK' not in os.environ:
        raise InputError('--launcher pytorch expects the environment torchrun sets up (RANK, '
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
