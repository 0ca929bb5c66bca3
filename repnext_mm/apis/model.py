"""Config + checkpoint -> a completely loaded model, in its training or fused form.

What the deploy, analysis and visualization tools share (mmpretrain's ``apis/model.py`` plays
this part for its tools): building a config's model in its registry scope, telling its task,
loading a training or a fused checkpoint strictly (a fused one is recognized by its meta or
keys and builds the fused structure), and the input normalization the config applies.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from mmengine.config import Config
from torch import nn

from repnext_mm.apis.checkpoint import (FUSED_META_KEY, UNSAFE_FLAG, load_state_dict_checked,
                                        looks_fused, read_checkpoint, state_dict_of)
from repnext_mm.apis.config import load_config
from repnext_mm.models.utils.reparameterize import reparameterizable_modules, switch_to_deploy_all
from repnext_mm.utils.errors import InputError

Task = Literal['classifier', 'detector', 'segmentor', 'backbone']


def load_model_config(path: str | os.PathLike,
                      cfg_options: Mapping[str, Any] | None = None) -> Config:
    """A config to build one model from (deploy, analysis and visualization tools).

    :func:`~repnext_mm.apis.config.load_config` with its checks, plus: the config defines a
    ``model``, and not a distillation one (whose checkpoints hold the student only).
    """
    path = Path(path)
    cfg = load_config(str(path), dict(cfg_options) if cfg_options else None)
    if 'model' not in cfg:
        raise InputError(f'config {path} defines no "model"; pass a classifier, detector or '
                          'segmentor config')
    if isinstance(cfg.model, Mapping) and 'teacher' in cfg.model:
        student = path.with_name(path.name.replace('_distill', ''))
        suggestion = student if student != path else 'the config without the teacher'
        raise InputError(f'{path} is a distillation config (its model trains with a teacher); the '
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
        raise InputError(f'cannot build the model of this config: {type(error).__name__}: '
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
        raise InputError(f'unsupported model type {type(model).__name__}: expected an mmpretrain '
                          'classifier, an mmdet detector or an mmseg segmentor')
    return 'backbone'


def backbone_arch_name(backbone: nn.Module) -> str | None:
    """``'m0'`` .. ``'m5'`` for a RepNeXt backbone with a standard arch, else ``None``."""
    from repnext_mm.models.backbones.repnext import RepNeXt

    if not isinstance(backbone, RepNeXt):
        return None
    return RepNeXt.arch_name(backbone.arch['widths'], backbone.arch['depths'])


def deploy_cfg_options(cfg_model: Mapping[str, Any], fused_names: list[str]) -> dict[str, bool]:
    """Config overrides that build the fused structure of ``fused_names`` directly.

    Args:
        cfg_model: The config's ``model`` dict.
        fused_names: Qualified module names returned by :func:`switch_to_deploy_all`
            (e.g. ``['backbone', 'head']``).

    Returns:
        ``{'model.backbone.deploy': True, ...}``, for ``Config.merge_from_dict`` and ``--cfg-options``.

    Raises:
        InputError: A fused module has no config dict of its own at the same path (it was built
            by its parent), so no ``--cfg-options`` entry can build it fused.
    """
    options: dict[str, bool] = {}
    for name in fused_names:
        node: Any = cfg_model
        for part in name.split('.') if name else []:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping) or 'type' not in node:
            raise InputError(
                f"the fused module 'model.{name}' has no config dict at model.{name}, so its deploy "
                'structure cannot be selected with --cfg-options; give it a "deploy" argument in '
                'the config or build it fused in code.')
        options[f'model.{name}.deploy' if name else 'model.deploy'] = True
    return options


def format_cfg_options(options: Mapping[str, Any]) -> str:
    """``{'model.backbone.deploy': True}`` -> ``'model.backbone.deploy=True'`` (space separated)."""
    return ' '.join(f'{key}={value}' for key, value in options.items())


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


def _is_fused_checkpoint(checkpoint: Any, state_dict: Mapping[str, Any]) -> tuple[bool, dict]:
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    info = meta.get(FUSED_META_KEY) if isinstance(meta, dict) else None
    info = info if isinstance(info, dict) else {}
    return bool(info.get('fused')) or looks_fused(state_dict), info


def prepare_model(config: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                  cfg_options: Mapping[str, Any] | None = None,
                  unsafe_full_unpickle: bool = False) -> PreparedModel:
    """Builds the config's model and loads a training or fused checkpoint (strictly).

    Raises:
        InputError: Unreadable config or checkpoint, or weights that do not fit the config.
    """
    cfg = load_model_config(config, cfg_options)
    training = build_model(cfg)
    task = model_task(training)
    names = list(reparameterizable_modules(training))
    arch = backbone_arch_name(getattr(training, 'backbone', training))
    if checkpoint is None:
        return PreparedModel(cfg, task, 'random initialization', training, arch=arch,
                             notes=['no checkpoint given: random weights (latency is valid, '
                                    'outputs are meaningless)'])
    raw = read_checkpoint(checkpoint, unsafe_full_unpickle=unsafe_full_unpickle,
                          unsafe_hint=UNSAFE_FLAG)
    state_dict = state_dict_of(raw, str(checkpoint))
    fused, info = _is_fused_checkpoint(raw, state_dict)
    if not fused:
        load_state_dict_checked(training, state_dict, str(checkpoint))
        return PreparedModel(cfg, task, str(checkpoint), training, arch=arch)
    options = info.get('cfg_options') or deploy_cfg_options(cfg.model, names)
    deployed = build_model(cfg, options)
    load_state_dict_checked(deployed, state_dict, str(checkpoint),
                           hint='It is a fused checkpoint: pass the config it was fused from.')
    return PreparedModel(cfg, task, str(checkpoint), None, fused_model=deployed.eval(), arch=arch,
                         notes=[f'{checkpoint} is already fused: the unfused form of these weights '
                                'is not available'])


def prepare_bare_backbone(arch: str) -> PreparedModel:
    """A RepNeXt backbone (all four stage outputs) with random weights, for ``--arch``."""
    from repnext_mm.models.backbones.repnext import RepNeXt

    return PreparedModel(None, 'backbone', 'random initialization', RepNeXt(arch).eval(), arch=arch)


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
        raise InputError(f'data_preprocessor mean/std must have 3 entries for an image input, got '
                          f'mean={mean} std={std}')
    # Images are decoded as BGR; bgr_to_rgb / to_rgb flips them before normalization.
    to_rgb = bool(pre.get('bgr_to_rgb') or pre.get('to_rgb'))
    return Preprocessing(mean, std, 'RGB' if to_rgb else 'BGR')
