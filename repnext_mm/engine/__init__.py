"""Training and testing on top of MMEngine, and the pieces the tools add to its loop.

:mod:`.run` is what ``tools/train.py`` and ``tools/test.py`` call; below it the strict-loading
runner (:mod:`.runner`), the CPU multi-process launcher, resume, atomic checkpoint files, RNG
state and the per-library steps (:mod:`.tasks`). Inputs are checked by :mod:`repnext_mm.apis`.
"""
from .atomic_checkpoint import ATOMIC_BACKEND_NAME, AtomicLocalBackend, register_atomic_backend
from .rng_state_hook import RNGStateHook, capture_rng_state, restore_rng_state

register_atomic_backend()

__all__ = ['ATOMIC_BACKEND_NAME', 'AtomicLocalBackend', 'register_atomic_backend',
           'RNGStateHook', 'capture_rng_state', 'restore_rng_state']
