"""repnext_mm: RepNeXt backbones for mmdet 3.x, mmseg 1.x and mmpretrain 1.x."""
from .version import __version__
from .utils.safe_load import register_checkpoint_safe_globals

register_checkpoint_safe_globals()

from . import models  # noqa: E402,F401  (registers the modules)

__all__ = ['__version__']
