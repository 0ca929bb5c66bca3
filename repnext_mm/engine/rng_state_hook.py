"""Saving the random number generators with each checkpoint, so ``--resume`` continues exactly.

MMEngine 0.10.7 restores the weights, optimizer, schedulers and epoch/iteration on resume, and
re-seeds nothing: the resumed run draws its random numbers (data augmentation, RPN/RoI sampling,
dropout) from the streams as seeded at start-up, not from where the interrupted run left them.
Its weights therefore drift from an uninterrupted run's after the first resumed iteration. This
hook stores the Python, NumPy, torch CPU (and CUDA) generator states in the checkpoint and puts
them back when training resumes.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

RNG_STATE_KEY = 'rng_state'


def capture_rng_state() -> dict:
    """Returns every global generator state as plain containers and tensors.

    Only types that ``torch.load(weights_only=True)`` accepts without an allow-list are used
    (NumPy's key array goes in as a list), so the checkpoint stays loadable under torch >= 2.6.
    """
    bit_generator, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=dict(bit_generator=bit_generator, keys=keys.tolist(), position=int(position),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`.

    Raises:
        ValueError: ``state`` lacks one of the CPU generators (not written by this hook).
    """
    missing = {'python', 'numpy', 'torch'} - set(state)
    if missing:
        raise ValueError(f'the checkpoint\'s {RNG_STATE_KEY!r} entry lacks {sorted(missing)}; '
                         'it was not written by RNGStateHook')
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state['numpy']
    keys = np.asarray(numpy_state['keys'], dtype=np.uint32)
    np.random.set_state((numpy_state['bit_generator'], keys, numpy_state['position'],
                         numpy_state['has_gauss'], numpy_state['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    cuda_states = state.get('cuda')
    if cuda_states is not None and torch.cuda.is_available() and \
            len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Stores the global RNG states in every checkpoint and restores them on resume.

    Weights-only loads (``tools/test.py``, ``load_from`` without ``resume``) leave the generators
    alone: only :meth:`mmengine.runner.Runner.resume` restores them. In multi-process runs the
    checkpoint holds rank 0's states (MMEngine saves on rank 0 only), which every rank gets back.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_STATE_KEY] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runner.load_checkpoint (a plain weight load) calls this hook too; only a resume, which
        # continues the training loop, should continue the random streams.
        if RNG_STATE_KEY in checkpoint and getattr(runner, '_resume', False):
            restore_rng_state(checkpoint[RNG_STATE_KEY])
            runner.logger.info('restored the Python, NumPy and torch random number generator '
                               'states saved with the checkpoint')
