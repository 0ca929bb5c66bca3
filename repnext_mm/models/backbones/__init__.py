from .repnext import RepNeXt

__all__ = ['RepNeXt']
