from .backbones import RepNeXt
from .layers import reparam

__all__ = ['RepNeXt', 'reparam']

try:  # the classification pieces subclass mmpretrain's; detection/segmentation users may lack it
    import mmpretrain  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without mmpretrain
    pass
else:
    from .classifiers import DistillImageClassifier  # noqa: F401
    from .heads import RepNeXtClsHead  # noqa: F401
    __all__ += ['DistillImageClassifier', 'RepNeXtClsHead']
