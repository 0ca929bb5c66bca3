"""Deployment tools: reparameterization of trained checkpoints, conversion of the authors'
release, Core ML / ONNX export, and latency benchmarks.

The command line front ends live in ``tools/deploy/`` and ``tools/analysis/benchmark.py``; the
submodules here hold the logic (heavy optional dependencies such as coremltools and onnxruntime
are imported only by the functions that need them).
"""
from .convert import convert_author_state_dict, convert_official_checkpoint, map_author_key
from .errors import DeployError
from .fuse import deploy_cfg_options, format_cfg_options, switch_to_deploy_all
from .io import atomic_torch_save, load_checkpoint_file
from .reparameterize import reparameterize_checkpoint

__all__ = [
    'DeployError', 'atomic_torch_save', 'convert_author_state_dict', 'convert_official_checkpoint',
    'deploy_cfg_options', 'format_cfg_options', 'load_checkpoint_file', 'map_author_key',
    'reparameterize_checkpoint', 'switch_to_deploy_all'
]
