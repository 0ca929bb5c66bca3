"""Building classifiers, detectors and segmentors from configs and comparing their outputs.

Shared by the reparameterize, export and benchmark tools: config loading with clear errors,
model building in the config's registry scope, strict weight loading that explains mismatches,
and a deterministic tensor forward for each task.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import torch
from mmengine.config import Config
from torch import Tensor, nn

from .errors import DeployError

Task = Literal['classifier', 'detector', 'segmentor', 'backbone']

#: Input size used for checks when the user gives none (height, width).
DEFAULT_SHAPES: dict[str, tuple[int, int]] = {
    'classifier': (224, 224), 'detector': (512, 512), 'segmentor': (512, 512), 'backbone': (512, 512)}

#: Largest relative difference accepted between an original and a fused/exported model.
RELATIVE_TOLERANCE = 1e-4


def load_config(path: str | os.PathLike, cfg_options: Mapping[str, Any] | None = None) -> Config:
    """Reads an MMEngine config (importing its ``custom_imports``) and applies overrides."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f'config {path} does not exist; pass the path of a .py config, e.g. '
                          'configs/mmpretrain/repnext_m1_8xb256_in1k.py')
    try:
        cfg = Config.fromfile(str(path))
    except Exception as error:  # mmengine raises many types for broken configs
        raise DeployError(f'cannot read config {path}: {type(error).__name__}: {error}') from error
    if 'model' not in cfg:
        raise DeployError(f'config {path} defines no "model"; pass a classifier, detector or '
                          'segmentor config')
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if isinstance(cfg.model, Mapping) and 'teacher' in cfg.model:
        student = path.with_name(path.name.replace('_distill', ''))
        suggestion = student if student != path else 'the config without the teacher'
        raise DeployError(f'{path} is a distillation config (its model trains with a teacher); the '
                          'checkpoints it writes hold the student only, which is built by the plain '
                          f'config: pass {suggestion}')
    return cfg


def build_model(cfg: Config, overrides: Mapping[str, Any] | None = None) -> nn.Module:
    """Builds ``cfg.model`` in the config's ``default_scope`` (eval mode, CPU, random weights).

    Args:
        cfg: Config from :func:`load_config` (left unchanged).
        overrides: ``--cfg-options`` style overrides applied to a copy of ``cfg`` first, e.g.
            ``{'model.backbone.deploy': True}``.
    """
    from mmengine.registry import MODELS, init_default_scope

    cfg = copy.deepcopy(cfg)
    if overrides:
        cfg.merge_from_dict(dict(overrides))
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = copy.deepcopy(cfg.model)
    # As MMEngine's Runner does: a top-level data_preprocessor applies to the model.
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    # The weights come from the checkpoint given to the tool, never from init_cfg downloads.
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg['backbone'].pop('init_cfg', None)
    model_cfg.pop('init_cfg', None)
    try:
        model = MODELS.build(model_cfg)
    except Exception as error:
        hint = ''
        if 'mmcv._ext' in str(error):
            hint = (' (this mmcv has no compiled ops, e.g. mmcv-lite; mmdet and mmseg models need '
                    'the full mmcv: run tools/setup_env.sh)')
        raise DeployError(f'cannot build the model of this config: {type(error).__name__}: '
                          f'{error}{hint}') from error
    # SyncBN (the multi-GPU configs) refuses CPU inputs; one process needs plain BN, which has
    # the same parameters and buffers, so checkpoints load unchanged.
    from mmengine.model import revert_sync_batchnorm
    return revert_sync_batchnorm(model).eval()


def model_task(model: nn.Module) -> Task:
    """Classifies a built model as classifier, detector, segmentor or bare backbone."""
    if hasattr(model, 'roi_head') or hasattr(model, 'bbox_head') or hasattr(model, 'rpn_head'):
        return 'detector'
    if hasattr(model, 'decode_head'):
        return 'segmentor'
    if hasattr(model, 'head') and hasattr(model, 'backbone'):
        return 'classifier'
    if hasattr(model, 'backbone'):
        raise DeployError(f'unsupported model type {type(model).__name__}: expected an mmpretrain '
                          'classifier, an mmdet detector or an mmseg segmentor')
    return 'backbone'


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str,
                           hint: str = '') -> None:
    """``load_state_dict(strict=True)`` whose error lists what does not match and why.

    Raises:
        DeployError: Missing or unexpected keys or wrong shapes, summarized with examples.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                   for k, v in state_dict.items()
                   if k in own and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing (e.g. {", ".join(missing[:3])})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected (e.g. {", ".join(unexpected[:3])})')
        if wrong_shape:
            parts.append(f'{len(wrong_shape)} with the wrong shape (e.g. {"; ".join(wrong_shape[:3])})')
        raise DeployError(f'the weights in {source} do not match the model built from the config: '
                          + ', '.join(parts) + '. ' + (hint or 'Pass the config the checkpoint '
                                                       'was trained with.'))
    model.load_state_dict(state_dict, strict=True)


def example_inputs(shape: Sequence[int], batch_size: int = 1, seed: int = 0) -> Tensor:
    """A reproducible normalized input batch ``(N, 3, H, W)`` (values as after data preprocessing)."""
    height, width = shape
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, height, width, generator=generator)


def detection_samples(inputs: Tensor) -> list:
    """Minimal ``DetDataSample``s (image meta only) for a detector's tensor forward."""
    from mmdet.structures import DetDataSample

    height, width = inputs.shape[-2:]
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    return [DetDataSample(metainfo=meta) for _ in range(inputs.shape[0])]


@dataclass
class TensorForward:
    """Flattened raw outputs of a model (before any post-processing).

    Attributes:
        outputs: Every output tensor, in a fixed order.
        proposals: For two-stage detectors, the region proposals that were fed to the RoI head;
            pass them to the forward of the model being compared so both RoI heads see the same
            boxes (otherwise a near-tie in the RPN's top-k could select different proposals).
    """
    outputs: list[Tensor]
    proposals: Any = None


def _flatten(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flatten(v)]
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [t for v in value for t in _flatten(v)]
    return []


@torch.no_grad()
def tensor_forward(model: nn.Module, inputs: Tensor, proposals: Any = None) -> TensorForward:
    """The model's ``mode='tensor'`` outputs, computed deterministically for every task.

    Classifiers and segmentors run ``model(inputs, mode='tensor')`` (logits). Two-stage detectors
    return the multi-level features, the RPN's raw scores and box deltas, and the RoI head's raw
    outputs on a fixed set of proposals (those of the first model compared), which covers exactly
    what ``mode='tensor'`` computes while keeping NMS/top-k ties out of the comparison.
    """
    task = model_task(model)
    if task == 'backbone':
        return TensorForward(_flatten(model(inputs)))
    if task == 'detector' and getattr(model, 'with_rpn', False) and hasattr(model, 'roi_head'):
        samples = detection_samples(inputs)
        feats = model.extract_feat(inputs)
        rpn_raw = model.rpn_head(feats)
        if proposals is None:
            proposals = model.rpn_head.predict(feats, samples, rescale=False)
        roi_raw = model.roi_head.forward(feats, proposals, samples)
        return TensorForward(_flatten((feats, rpn_raw, roi_raw)), proposals)
    if task == 'detector':
        return TensorForward(_flatten(model(inputs, detection_samples(inputs), mode='tensor')))
    return TensorForward(_flatten(model(inputs, mode='tensor')))


@dataclass
class Difference:
    """How far two sets of outputs are apart.

    Attributes:
        max_abs: Largest absolute difference over all elements of all outputs.
        max_rel: Largest per-output ``max |a - b| / max |b|``.
        worst_output: Index of the output with the largest relative difference.
    """
    max_abs: float
    max_rel: float
    worst_output: int

    def within(self, tolerance: float = RELATIVE_TOLERANCE) -> bool:
        return self.max_rel <= tolerance

    def __str__(self) -> str:
        return (f'max relative difference {self.max_rel:.3e} (output #{self.worst_output}), '
                f'max absolute difference {self.max_abs:.3e}')


def compare_outputs(actual: Sequence[Tensor], expected: Sequence[Tensor]) -> Difference:
    """Compares two output lists element-wise (same count and shapes required)."""
    if len(actual) != len(expected):
        raise DeployError(f'the compared models return {len(actual)} and {len(expected)} outputs')
    max_abs, max_rel, worst = 0.0, 0.0, 0
    for index, (a, b) in enumerate(zip(actual, expected)):
        a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
        if a.shape != b.shape:
            raise DeployError(f'output #{index} has shape {tuple(a.shape)} vs {tuple(b.shape)}')
        if b.numel() == 0:
            continue
        abs_diff = (a - b).abs().max().item()
        rel = abs_diff / max(b.abs().max().item(), 1e-12)
        max_abs = max(max_abs, abs_diff)
        if rel > max_rel:
            max_rel, worst = rel, index
    return Difference(max_abs, max_rel, worst)


def repnext_arch_name(backbone: nn.Module) -> str | None:
    """``'m0'`` .. ``'m5'`` for a RepNeXt backbone with a standard arch, else ``None``."""
    arch = getattr(backbone, 'arch', None)
    settings = getattr(type(backbone), 'arch_settings', None)
    if not isinstance(arch, dict) or not settings:
        return None
    for name, setting in settings.items():
        if tuple(setting['widths']) == tuple(arch.get('widths', ())) and \
                tuple(setting['depths']) == tuple(arch.get('depths', ())):
            return name
    return None
