"""Training-loop pieces the tools add to MMEngine: atomic checkpoint files and exact resume."""
from .atomic_checkpoint import ATOMIC_BACKEND_NAME, AtomicLocalBackend, register_atomic_backend
from .rng_state_hook import RNGStateHook, capture_rng_state, restore_rng_state

register_atomic_backend()

__all__ = ['ATOMIC_BACKEND_NAME', 'AtomicLocalBackend', 'register_atomic_backend',
           'RNGStateHook', 'capture_rng_state', 'restore_rng_state']
