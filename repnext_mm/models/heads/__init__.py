from .repnext_head import NormLinear, RepNeXtClsHead

__all__ = ['NormLinear', 'RepNeXtClsHead']
