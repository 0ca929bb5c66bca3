"""The ``repnext_mm`` registry scope.

Children of MMEngine's root registries, so ``dict(type='repnext_mm.RepNeXt')`` resolves from
mmdet's, mmseg's and mmpretrain's registries (each looks up a scoped name from the shared root).
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='repnext_mm', locations=['repnext_mm.models'])
