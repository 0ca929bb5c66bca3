"""Converting every checkpoint the RepNeXt authors released to this package's layout.

One entry point, :func:`convert_official_checkpoint` (``tools/deploy/convert_official.py``),
recognizes the file by its content (:mod:`.source`), converts it with the module for its kind
and writes a checkpoint that loads strictly into the config it names:

- :mod:`.classifier`: ImageNet classifiers (DeiT-style ``.pth``, timm ``.pth.tar``),
- :mod:`.downstream`: Mask R-CNN (mmdet 2.28) and Semantic FPN (mmseg 0.30), with the
  neck / head rename table (empty: both versions name those modules alike),
- :mod:`.fused`: the fused TorchScript classifiers (BatchNorms folded),

on top of :mod:`.keys`, the authors' module names and ours.
"""
from .classifier import convert_author_state_dict
from .common import ConversionResult
from .downstream import RENAMES, convert_downstream_state_dict
from .fused import convert_fused_state_dict, map_fused_key
from .keys import detect_arch, map_author_key
from .official import ConversionReport, convert_official_checkpoint, describe
from .source import KINDS, read_source

__all__ = [
    'ConversionReport', 'ConversionResult', 'KINDS', 'RENAMES', 'convert_author_state_dict',
    'convert_downstream_state_dict', 'convert_fused_state_dict', 'convert_official_checkpoint',
    'describe', 'detect_arch', 'map_author_key', 'map_fused_key', 'read_source',
]
