"""repnext_mm: RepNeXt backbones for mmdet 3.x, mmseg 1.x and mmpretrain 1.x."""
from importlib.util import find_spec as _find_spec

from .version import __version__
from .utils.safe_load import register_checkpoint_safe_globals

register_checkpoint_safe_globals()

from . import models  # noqa: E402,F401  (registers the modules)
from .hub.weights import register_release_loader  # noqa: E402

# The authors' release addresses load through every MMEngine checkpoint path (init_cfg
# Pretrained, load_from, load_checkpoint): downloaded once, converted (repnext_mm.hub.weights).
register_release_loader()

# timm is optional: where it is installed (with mmpretrain, whose head the classifier uses),
# repnext_m0 .. repnext_m5 are timm models too (repnext_mm.hub.timm_models).
if _find_spec('timm') is not None and _find_spec('mmpretrain') is not None:
    from .hub import timm_models  # noqa: E402,F401  (registers the models with timm)

# mmpretrain is optional: where it is installed, the zoo's classifiers (model-index.yml) are
# models of its hub: mmpretrain.get_model / list_models / ImageClassificationInferencer by name.
if _find_spec('mmpretrain') is not None:
    from .zoo.model_index import register_mmpretrain_models  # noqa: E402

    register_mmpretrain_models()

__all__ = ['__version__']
