"""Preparing a config + checkpoint for export and benchmarking.

:func:`prepare_model` accepts a training checkpoint, a fused checkpoint written by
``tools/deploy/reparameterize.py``, or no checkpoint (random weights: fine for latency), and
hands out fused and unfused copies holding the same weights. :class:`ExportWrapper` gives every
task one traceable ``forward(image) -> tuple[Tensor, ...]``.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from mmengine.config import Config
from torch import Tensor, nn

from repnext_mm.models.utils.checkpoint import extract_state_dict
from .builder import (Task, build_model, load_config, load_state_dict_strict, model_task,
                      repnext_arch_name)
from .errors import DeployError
from .fuse import (FUSED_META_KEY, deploy_cfg_options, reparameterizable_modules,
                   switch_to_deploy_all)
from .io import load_checkpoint_file
from .reparameterize import FUSED_KEY_MARKERS


@dataclass
class PreparedModel:
    """A model built from a config with its weights, ready to be fused, exported or timed.

    Attributes:
        cfg: The config.
        task: ``'classifier'``, ``'detector'``, ``'segmentor'`` or ``'backbone'``.
        weights: Where the weights came from (for reports).
        training_model: The unfused model (``None`` if only a fused checkpoint was given).
        fused_model: The fused model, built lazily by :meth:`fused`.
        arch: RepNeXt arch name of the backbone, if standard.
        notes: Things the user should know (random weights, no unfused form, ...).
    """
    cfg: Config | None
    task: Task
    weights: str
    training_model: nn.Module | None
    fused_model: nn.Module | None = None
    arch: str | None = None
    notes: list[str] = field(default_factory=list)

    def fused(self) -> nn.Module:
        """The fused model (built once from a copy of the training model)."""
        if self.fused_model is None:
            model = copy.deepcopy(self.training_model)
            switch_to_deploy_all(model)
            self.fused_model = model.eval()
        return self.fused_model

    def unfused(self, srp_forward: str = 'branches') -> nn.Module | None:
        """A copy of the training-form model (eval mode) running its SRP branches literally.

        ``'branches'`` runs every branch as in the authors' training graph (what fusion removes);
        ``'merged'`` is this package's fast training path. ``None`` for a fused-only checkpoint.
        """
        if self.training_model is None:
            return None
        model = copy.deepcopy(self.training_model).eval()
        for module in model.modules():
            if hasattr(module, 'srp_forward'):
                module.srp_forward = srp_forward
        return model


def _is_fused_checkpoint(checkpoint: Any, state_dict: Mapping[str, Tensor]) -> tuple[bool, dict]:
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    info = meta.get(FUSED_META_KEY) if isinstance(meta, dict) else None
    info = info if isinstance(info, dict) else {}
    fused = bool(info.get('fused')) or any(m in k for k in state_dict for m in FUSED_KEY_MARKERS)
    return fused, info


def prepare_model(config: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                  cfg_options: Mapping[str, Any] | None = None,
                  unsafe_full_unpickle: bool = False) -> PreparedModel:
    """Builds the config's model and loads a training or fused checkpoint (strictly).

    Raises:
        DeployError: Unreadable config or checkpoint, or weights that do not fit the config.
    """
    cfg = load_config(config, cfg_options)
    training = build_model(cfg)
    task = model_task(training)
    names = list(reparameterizable_modules(training))
    arch = repnext_arch_name(getattr(training, 'backbone', training))
    if checkpoint is None:
        return PreparedModel(cfg, task, 'random initialization', training, arch=arch,
                             notes=['no checkpoint given: random weights (latency is valid, '
                                    'outputs are meaningless)'])
    raw = load_checkpoint_file(checkpoint, unsafe_full_unpickle)
    if not isinstance(raw, dict):
        raise DeployError(f'{checkpoint} holds a {type(raw).__name__}, not a checkpoint dict')
    state_dict = extract_state_dict(raw)
    fused, info = _is_fused_checkpoint(raw, state_dict)
    if not fused:
        load_state_dict_strict(training, state_dict, str(checkpoint))
        return PreparedModel(cfg, task, str(checkpoint), training, arch=arch)
    options = info.get('cfg_options') or deploy_cfg_options(cfg.model, names)
    deployed = build_model(cfg, options)
    load_state_dict_strict(deployed, state_dict, str(checkpoint),
                           hint='It is a fused checkpoint: pass the config it was fused from.')
    return PreparedModel(cfg, task, str(checkpoint), None, fused_model=deployed.eval(), arch=arch,
                         notes=[f'{checkpoint} is already fused: the unfused form of these weights '
                                'is not available'])


def prepare_bare_backbone(arch: str) -> PreparedModel:
    """A RepNeXt backbone (all four stage outputs) with random weights, for ``--arch``."""
    from repnext_mm.models.backbones.repnext import RepNeXt

    return PreparedModel(None, 'backbone', 'random initialization', RepNeXt(arch).eval(), arch=arch)


class ExportWrapper(nn.Module):
    """One traceable ``forward(image) -> tuple[Tensor, ...]`` for every task.

    Args:
        model: Classifier, segmentor, detector or bare backbone.
        task: Its task (see :func:`~repnext_mm.deploy.builder.model_task`).
        backbone_only: Export only ``model.backbone`` (all its configured stage outputs). Required
            for detectors, whose post-processing (NMS) does not belong in a traced graph.
    """

    def __init__(self, model: nn.Module, task: Task, backbone_only: bool = False) -> None:
        super().__init__()
        if task == 'detector' and not backbone_only:
            raise DeployError('a whole detector cannot be exported or timed as one traced graph '
                              '(NMS and box decoding are data dependent); pass --backbone-only, '
                              'or use --dataset in tools/analysis/benchmark.py for end-to-end '
                              'images/s')
        self.kind = 'backbone' if backbone_only or task == 'backbone' else task
        self.net = model.backbone if backbone_only and task != 'backbone' else model
        self.output_names = self._output_names()

    def _output_names(self) -> list[str]:
        if self.kind == 'classifier':
            return ['logits']
        if self.kind == 'segmentor':
            return ['seg_logits']
        indices = getattr(self.net, 'out_indices', None)
        if indices is None:
            return ['features']
        return [f'stage{i}' for i in indices]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if self.kind == 'backbone':
            out = self.net(image)
            return tuple(out) if isinstance(out, (list, tuple)) else (out,)
        return (self.net(image, mode='tensor'),)


@dataclass
class Preprocessing:
    """The data preprocessor's normalization: ``(pixel - mean) / std`` in the model's channel order.

    Attributes:
        mean: Per-channel mean, in the order the model consumes channels.
        std: Per-channel std.
        color_layout: ``'RGB'`` or ``'BGR'``: the channel order the model consumes.
    """
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color_layout: str


def preprocessing_of(cfg: Config | None) -> Preprocessing:
    """Reads mean/std/channel order from ``model.data_preprocessor`` (or the top-level one)."""
    identity = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 'RGB')
    if cfg is None:
        return Preprocessing((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), 'RGB')
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    if pre.get('mean') is None or pre.get('std') is None:
        return identity
    mean, std = tuple(map(float, pre['mean'])), tuple(map(float, pre['std']))
    if len(mean) != 3 or len(std) != 3:
        raise DeployError(f'data_preprocessor mean/std must have 3 entries for an image input, got '
                          f'mean={mean} std={std}')
    # Images are decoded as BGR; bgr_to_rgb / to_rgb flips them before normalization.
    to_rgb = bool(pre.get('bgr_to_rgb') or pre.get('to_rgb'))
    return Preprocessing(mean, std, 'RGB' if to_rgb else 'BGR')


@torch.no_grad()
def fold_input_channel_scale(wrapper: ExportWrapper, scale: Tensor) -> bool:
    """Multiplies the input channels of the first convolution by ``scale`` (in place).

    Exact for a conv with zero padding (a scaled zero is still zero). Used to absorb the
    per-channel part of the std that Core ML's single-scalar ``ImageType.scale`` cannot express.

    Returns:
        ``True`` if folded, ``False`` if the first layer is not a plain conv on the 3 input channels.
    """
    stem = getattr(wrapper.net, 'stem', None) or getattr(getattr(wrapper.net, 'backbone', None),
                                                        'stem', None)
    first = stem[0] if isinstance(stem, nn.Sequential) and len(stem) else None
    conv = getattr(first, 'conv', None)
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != scale.numel() or conv.groups != 1 \
            or conv.padding_mode != 'zeros':
        return False
    conv.weight.mul_(scale.to(conv.weight).view(1, -1, 1, 1))
    return True
