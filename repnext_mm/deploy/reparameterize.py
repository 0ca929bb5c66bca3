"""Fusing a trained classifier / detector / segmentor checkpoint into its deploy form.

The result is verified before anything is written: the fused state dict must load strictly into
the model built from the same config with the deploy overrides, and that model's outputs must
match the original model's on the same input.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from repnext_mm.apis.checkpoint import (FUSED_KEY_MARKERS, FUSED_META_KEY, UNSAFE_FLAG,
                                        extract_state_dict, load_state_dict_checked,
                                        read_checkpoint)
from repnext_mm.apis.model import (backbone_arch_name, build_model, deploy_cfg_options,
                                   format_cfg_options, load_model_config, model_task)
from repnext_mm.models.utils.reparameterize import (count_batchnorms, reparameterizable_modules,
                                                    switch_to_deploy_all)
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_torch_save, check_output_path
from repnext_mm.version import __version__
from .verify import (DEFAULT_SHAPES, RELATIVE_TOLERANCE, Difference, check_input_shape,
                     compare_outputs, example_inputs, tensor_forward)



@dataclass
class ReparameterizeResult:
    """What :func:`reparameterize_checkpoint` did.

    Attributes:
        out: The written checkpoint.
        task: ``'classifier'``, ``'detector'`` or ``'segmentor'``.
        arch: RepNeXt arch name of the backbone (``None`` for a custom arch or another backbone).
        fused_modules: Qualified names of the modules switched to deploy.
        cfg_options: Overrides that build the fused structure from the same config.
        difference: Original vs fused outputs on the verification input.
        input_shape: Shape of the verification input.
    """
    out: Path
    task: str
    arch: str | None
    fused_modules: list[str]
    cfg_options: dict[str, bool]
    difference: Difference
    input_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)

    @property
    def cfg_options_string(self) -> str:
        return format_cfg_options(self.cfg_options)


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _deploy_flags_in_config(node: Any, path: str = 'model') -> dict[str, bool]:
    """``{'model.backbone.deploy': False, ...}`` for every sub-config that sets ``deploy=True``."""
    flags: dict[str, bool] = {}
    if isinstance(node, Mapping):
        if node.get('deploy') is True:
            flags[f'{path}.deploy'] = False
        for key, value in node.items():
            flags.update(_deploy_flags_in_config(value, f'{path}.{key}'))
    return flags


def _training_state_dict(checkpoint: Any, source: str, use_ema: bool) -> dict[str, Tensor]:
    if not isinstance(checkpoint, dict):
        raise InputError(f'{source} holds a {type(checkpoint).__name__}, not a checkpoint dict; '
                          'pass the .pth file written by the training runner')
    if use_ema:
        ema = checkpoint.get('ema_state_dict')
        if not isinstance(ema, dict):
            raise InputError(f'{source} has no "ema_state_dict" (it was trained without an EMA '
                              'hook); run without --ema')
        # MMEngine's EMA wrapper stores the averaged model under "module." plus a step counter.
        state_dict = {k[len('module.'):]: v for k, v in ema.items() if k.startswith('module.')}
    else:
        state_dict = extract_state_dict(checkpoint)
    if not state_dict or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise InputError(f'{source} holds no state dict of tensors (keys: '
                          f'{", ".join(map(str, list(checkpoint)[:6]))}); pass a training checkpoint')
    return state_dict


def _check_not_fused(checkpoint: dict, state_dict: Mapping[str, Tensor], source: str) -> None:
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    fused_meta = meta.get(FUSED_META_KEY, {})
    marker = next((k for k in state_dict if any(m in k for m in FUSED_KEY_MARKERS)), None)
    if (isinstance(fused_meta, dict) and fused_meta.get('fused')) or marker is not None:
        options = fused_meta.get('cfg_options') if isinstance(fused_meta, dict) else None
        hint = (f'--cfg-options {format_cfg_options(options)}' if options else
                '--cfg-options model.backbone.deploy=True (and model.head.deploy=True for classifiers)')
        raise InputError(
            f'{source} is already fused (' + (f'key {marker}' if marker else 'meta says fused')
            + f'); there is nothing to reparameterize. Load it directly with {hint}.')


def reparameterize_checkpoint(config: str | os.PathLike,
                              checkpoint: str | os.PathLike,
                              out: str | os.PathLike,
                              force: bool = False,
                              shape: Sequence[int] | None = None,
                              cfg_options: Mapping[str, Any] | None = None,
                              tolerance: float = RELATIVE_TOLERANCE,
                              use_ema: bool = False,
                              unsafe_full_unpickle: bool = False,
                              log: Callable[[str], None] = print) -> ReparameterizeResult:
    """Fuses ``checkpoint`` (trained with ``config``) and writes the verified result to ``out``.

    Args:
        config: The config the checkpoint was trained with.
        checkpoint: MMEngine training checkpoint (``state_dict`` + ``meta``).
        out: Output path; written atomically, only after verification.
        force: Overwrite an existing ``out``.
        shape: ``(H, W)`` of the verification input (default: 224 for classifiers, 512
            otherwise); each side at least :data:`~.verify.MIN_INPUT_SIZE`.
        cfg_options: Extra config overrides (as ``--cfg-options``).
        tolerance: Largest accepted relative output difference.
        use_ema: Fuse the EMA weights (``ema_state_dict``) instead of the regular ones.
        unsafe_full_unpickle: Allow arbitrary objects when unpickling (trusted files only).
        log: Receives progress lines.

    Raises:
        InputError: Bad input or failed verification; nothing is written in that case.
    """
    check_input_shape(shape)
    out = check_output_path(out, force)
    if Path(checkpoint).exists() and out.exists() and out.resolve() == Path(checkpoint).resolve():
        raise InputError('OUT is the input checkpoint; write the fused model to a new file so the '
                          'trainable weights are kept')
    cfg = load_model_config(config, cfg_options)
    raw = read_checkpoint(checkpoint, unsafe_full_unpickle=unsafe_full_unpickle,
                          unsafe_hint=UNSAFE_FLAG)
    source = str(checkpoint)
    state_dict = _training_state_dict(raw, source, use_ema)
    _check_not_fused(raw, state_dict, source)

    notes = []
    training_overrides = _deploy_flags_in_config(cfg.model)
    if training_overrides:
        notes.append(f'the config builds fused modules ({", ".join(training_overrides)}); the '
                     'training form was built to load the checkpoint')
    model = build_model(cfg, training_overrides)
    task = model_task(model)
    load_state_dict_checked(
        model, state_dict, source,
        hint='Was it trained with another config or arch? Pass the config it was trained with.')
    if not reparameterizable_modules(model):
        raise InputError('nothing in this model can be reparameterized (no module defines '
                          'switch_to_deploy); is the backbone RepNeXt?')

    height, width = shape or DEFAULT_SHAPES[task]
    inputs = example_inputs((height, width))
    log(f'running the original {task} on a {tuple(inputs.shape)} input')
    reference = tensor_forward(model, inputs)

    fused_names = switch_to_deploy_all(model)
    options = deploy_cfg_options(cfg.model, fused_names)
    fused_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    del model
    deployed = build_model(cfg, {**training_overrides, **options})
    load_state_dict_checked(deployed, fused_state, 'the fused state dict',
                           hint=f'The config with {format_cfg_options(options)} does not build the '
                                'structure switch_to_deploy() produced; this is a bug in the module.')
    log(f'running the fused {task} ({", ".join(fused_names)} switched; '
        f'{count_batchnorms(getattr(deployed, "backbone", deployed))} BatchNorm left in the backbone)')
    fused = tensor_forward(deployed, inputs, proposals=reference.proposals)
    difference = compare_outputs(fused.outputs, reference.outputs)
    log(f'original vs fused outputs: {difference}')
    if not difference.within(tolerance):
        raise InputError(f'the fused model differs from the original beyond the tolerance '
                          f'{tolerance:g} ({difference}); nothing was written. Check that every '
                          "norm layer's running statistics are finite.")

    backbone = getattr(deployed, 'backbone', None)
    arch = backbone_arch_name(backbone) if backbone is not None else None
    source_meta = raw.get('meta') if isinstance(raw.get('meta'), dict) else {}
    meta: dict[str, Any] = {
        FUSED_META_KEY: dict(
            fused=True,
            source=os.path.abspath(source),
            source_sha256=file_sha256(source),
            source_weights='ema_state_dict' if use_ema else 'state_dict',
            config=os.path.abspath(str(config)),
            task=task,
            arch=arch,
            fused_modules=fused_names,
            cfg_options=options,
            verified_input_shape=list(inputs.shape),
            verified_max_rel_diff=difference.max_rel,
            repnext_mm_version=__version__,
            torch_version=str(torch.__version__),
        )
    }
    for key in ('dataset_meta', 'epoch', 'iter'):  # kept: inference APIs read the class names
        if key in source_meta:
            meta[key] = source_meta[key]
    atomic_torch_save(dict(state_dict=fused_state, meta=meta), out)
    return ReparameterizeResult(out, task, arch, fused_names, options, difference,
                                tuple(inputs.shape), notes)
