"""Deployment tools: reparameterization of trained checkpoints, conversion of the authors'
release, and Core ML / ONNX export (latency benchmarks: :mod:`repnext_mm.benchmark`).

The command line front ends live in ``tools/deploy/``; the submodules here hold the logic
(heavy optional dependencies such as coremltools and onnxruntime are imported only by the
functions that need them).
"""
from .convert import convert_author_state_dict, convert_official_checkpoint, map_author_key
from repnext_mm.utils.errors import InputError
from repnext_mm.apis.model import deploy_cfg_options, format_cfg_options
from repnext_mm.models.utils.reparameterize import switch_to_deploy_all
from repnext_mm.utils.fileio import atomic_torch_save
from .reparameterize import reparameterize_checkpoint

__all__ = [
    'InputError', 'atomic_torch_save', 'convert_author_state_dict', 'convert_official_checkpoint',
    'deploy_cfg_options', 'format_cfg_options', 'map_author_key',
    'reparameterize_checkpoint', 'switch_to_deploy_all'
]
