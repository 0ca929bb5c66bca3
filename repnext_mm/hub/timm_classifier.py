"""The RepNeXt ImageNet classifier with timm's model interface, built from this package's modules.

:class:`RepNeXtTimm` holds the :class:`~repnext_mm.models.backbones.repnext.RepNeXt` backbone and
the :class:`~repnext_mm.models.heads.repnext_head.RepNeXtClsHead` of the mmpretrain configs
under the names those configs give them (``backbone.``, ``head.``), so a checkpoint of our
mmpretrain classifier, or one of the authors' files converted by :mod:`repnext_mm.deploy.convert`,
is its state dict. It adds only what timm expects of a model: timm's selectable global pooling,
dropout before the classifier, ``forward_features`` / ``forward_head``, intermediate features,
pruning, a replaceable classifier, parameter groups, gradient checkpointing (the backbone's
``with_cp``) and the arguments timm's scripts (``train.py``, ``benchmark.py``) pass to every
model: ``drop_rate``, ``drop_path_rate`` (the backbone's stochastic depth), ``global_pool``,
``bn_momentum`` / ``bn_eps`` (every BatchNorm) and ``drop_block_rate`` (0 only: RepNeXt has no
DropBlock). timm's ``scriptable`` is a layer-config flag that ``create_model`` keeps; the model
scripts either way.

Registered in timm as ``repnext_m0`` .. ``repnext_m5`` by :mod:`repnext_mm.hub.timm_models`.
"""
# No ``from __future__ import annotations``: torch.fx copies forward's annotations into the code
# it generates, and TorchScript then needs them as types, not strings.
import contextlib
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from timm.layers import SelectAdaptivePool2d
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.heads.repnext_head import RepNeXtClsHead
from repnext_mm.models.utils.reparameterize import switch_to_deploy_all
from .timm_weights import load_release

#: ``global_pool`` values, those of timm's ``SelectAdaptivePool2d`` (``'fast...'``: the same
#: pooling as a plain reduction; ``'catavgmax'`` doubles the classifier's input), or ``''``: none
#: (``forward`` then returns a map: the features, or the class scores at every position).
POOL_TYPES = ('avg', 'max', 'avgmax', 'catavgmax', 'fast', 'fastavg', 'fastmax', 'fastavgmax',
              'fastcatavgmax', '')


def _check_head(num_classes: int, global_pool: str) -> None:
    if global_pool not in POOL_TYPES:
        raise ValueError(f'global_pool={global_pool!r}: expected one of {POOL_TYPES} '
                         "(timm's pooling types; '': none)")
    if num_classes < 0:
        raise ValueError(f'num_classes must be >= 0 (0: no classifier), got {num_classes}')


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_rate(name: str, value: object) -> None:
    if not _is_number(value) or not 0 <= value < 1:
        raise ValueError(f'{name}={value!r}: expected a number in [0, 1) (0: none)')


def _check_training_options(drop_rate: float, drop_block_rate: float,
                            bn_momentum: Optional[float], bn_eps: Optional[float]) -> None:
    """timm's standard model arguments that the backbone does not check itself."""
    _check_rate('drop_rate', drop_rate)
    _check_rate('drop_block_rate', drop_block_rate)
    if drop_block_rate:
        raise ValueError(f'drop_block_rate={drop_block_rate!r}: RepNeXt has no DropBlock (timm '
                         'uses it in ResNet-style models); leave it unset or 0 and regularize '
                         'with drop_path_rate (stochastic depth) or drop_rate instead')
    if bn_momentum is not None and not (_is_number(bn_momentum) and 0 <= bn_momentum <= 1):
        raise ValueError(f'bn_momentum={bn_momentum!r}: expected a number in [0, 1] '
                         "(PyTorch's BatchNorm momentum, default 0.1) or None")
    if bn_eps is not None and not (_is_number(bn_eps) and bn_eps > 0):
        raise ValueError(f'bn_eps={bn_eps!r}: expected a positive number (default 1e-5) or None')


def _pool(global_pool: str) -> SelectAdaptivePool2d:
    """timm's global pooling to ``(N, C)``; ``''``: the identity (the map is kept).

    Always timm's ``fast`` form of the type (a plain mean / max over the map, the same values
    as its adaptive-pooling form): its adaptive ``catavgmax`` does not script, and the mean is
    what the classifier has always computed.
    """
    fast = global_pool if global_pool.startswith('fast') else 'fast' + global_pool
    return SelectAdaptivePool2d(pool_type=fast if global_pool else '', flatten=bool(global_pool))


class RepNeXtTimm(nn.Module):
    """RepNeXt classifier: backbone, global pooling, dropout, the two-head classifier.

    Args:
        arch: ``'m0'`` .. ``'m5'`` (or ``dict(widths=..., depths=...)``, as for ``RepNeXt``).
        num_classes: Classes; 0 leaves the classifier out (``forward`` returns pooled features).
        in_chans: Input image channels.
        global_pool: A timm pooling type (:data:`POOL_TYPES`, default ``'avg'``), or ``''``: no
            pooling, ``forward`` returns the feature map (``num_classes=0``) or the class scores
            at each of its positions.
        drop_rate: Dropout on the pooled features, before the classifier (training only).
        drop_path_rate: Stochastic depth of the backbone's blocks and downsample layers, rising
            linearly over them to this rate (``RepNeXt``'s argument; training only, removed by
            the fusion).
        drop_block_rate: Accepted for timm's scripts, which pass it to every model: 0 only
            (RepNeXt has no DropBlock); any other rate is refused.
        bn_momentum: Momentum of every BatchNorm (PyTorch's meaning); ``None``: PyTorch's 0.1.
        bn_eps: Epsilon of every BatchNorm; ``None``: PyTorch's 1e-5.
        srp_forward: How the training form runs its SRP branches (``RepNeXt``'s argument).
        design: The backbone's design preset (``RepNeXt``'s argument): ``'repnext'`` (the
            released model), one of the paper's ablations (e.g. ``'no_srp'``) or
            ``'single_branch'`` (M0E-M2E).
        deploy: Build the fused form directly (no SRP branches, no BatchNorm, one Linear).
        device: Where to create the parameters.
        dtype: Their dtype.

    Raises:
        ValueError: An argument outside what it accepts; the message starts with
            ``name=value:`` and says what is accepted.
    """

    def __init__(self,
                 arch: Union[str, Dict[str, Any]] = 'm1',
                 num_classes: int = 1000,
                 in_chans: int = 3,
                 global_pool: str = 'avg',
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0,
                 drop_block_rate: float = 0.0,
                 bn_momentum: Optional[float] = None,
                 bn_eps: Optional[float] = None,
                 srp_forward: str = 'merged',
                 design: str = 'repnext',
                 deploy: bool = False,
                 device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        _check_head(num_classes, global_pool)
        _check_training_options(drop_rate, drop_block_rate, bn_momentum, bn_eps)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        # Only the overrides given: a new classifier (reset_classifier) gets them too.
        self._batchnorm_overrides = {name: value for name, value in
                                     (('momentum', bn_momentum), ('eps', bn_eps))
                                     if value is not None}
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.backbone = RepNeXt(arch, in_channels=in_chans, out_indices=(0, 1, 2, 3),
                                    srp_forward=srp_forward, deploy=deploy,
                                    drop_path_rate=drop_path_rate, design=design)
            widths = self.backbone.widths
            self.num_features = self.head_hidden_size = widths[-1]
            self.pool = _pool(global_pool)
            self.head_drop = nn.Dropout(drop_rate)
            self.head: Optional[RepNeXtClsHead] = (
                RepNeXtClsHead(num_classes, self._pooled_features(), deploy=deploy)
                if num_classes else None)
        self._override_batchnorms(self)
        if dtype is not None:
            self.to(dtype=dtype)
        self.feature_info = [
            dict(num_chs=width, reduction=4 * 2 ** i, module=f'backbone.stages.{i}')
            for i, width in enumerate(widths)]

    @torch.jit.ignore
    def _pooled_features(self) -> int:
        """The classifier's input width: ``num_features``, twice that for ``catavgmax``."""
        return self.num_features * self.pool.feat_mult()

    @torch.jit.ignore
    def _override_batchnorms(self, module: nn.Module) -> None:
        for norm in module.modules():
            if isinstance(norm, _BatchNorm):
                for name, value in self._batchnorm_overrides.items():
                    setattr(norm, name, value)

    # ------------------------------------------------------------------------------------------
    # timm's model interface
    # ------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups, input side first (for layer-wise learning-rate decay): the stem,
        then each stage (``coarse``) or each downsample layer and block, then the classifier."""
        stages = r'^backbone\.stages\.(\d+)'
        # (-1,): a stage's downsample layer is a group of its own, before the stage's block 0
        return dict(stem=r'^backbone\.stem',
                    blocks=stages if coarse else [(stages + r'\.downsample', (-1,)),
                                                  (stages + r'\.blocks\.(\d+)', None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every block and downsample layer (``RepNeXt.with_cp``)."""
        self.backbone.with_cp = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier (both heads, or their fused Linear); ``nn.Identity`` without one."""
        return self.head if self.head is not None else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new, randomly initialized classifier for ``num_classes`` (0: none).

        Args:
            num_classes: Classes of the new classifier.
            global_pool: A pooling type (:data:`POOL_TYPES`) or ``''``; ``None`` keeps the
                current pooling.
        """
        pool = self.global_pool if global_pool is None else global_pool
        _check_head(num_classes, pool)
        self.global_pool = pool
        self.pool = _pool(pool)
        self.num_classes = num_classes
        if not num_classes:
            self.head = None
            return
        reference = next(self.backbone.parameters())  # the new head joins the model's device/dtype
        with torch.device(reference.device):
            head = RepNeXtClsHead(num_classes, self._pooled_features())
        self._override_batchnorms(head)
        self.head = head.to(dtype=reference.dtype).train(self.training)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map ``(N, num_features, H / 32, W / 32)``."""
        x = self.backbone.stem(x)
        for stage in self.backbone.stages:
            x = stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pools the feature map, applies the dropout and classifies (``pre_logits``: no
        classifier).

        Without pooling (``global_pool=''``) the classifier scores each position of the map:
        ``(N, num_classes, H, W)``.
        """
        x = self.head_drop(self.pool(x))
        if self.head is None or pre_logits:
            return x
        if self.global_pool != '':
            return self.head.logits(x)
        positions = x.permute(0, 2, 3, 1)
        scores = self.head.logits(positions.flatten(0, 2))
        return scores.unflatten(0, positions.shape[:3]).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def _take_indices(self, indices: Optional[Union[int, List[int]]]) -> Tuple[List[int], int]:
        """Stage indices to return (``None``: all, ``n``: the last ``n``, a list: those, negative
        ones from the end) and the largest of them."""
        count = len(self.backbone.stages)
        if indices is None:
            take = list(range(count))
        elif isinstance(indices, int):
            if not 0 < indices <= count:
                raise ValueError(f'the last {indices} stages were asked for; there are {count}')
            take = list(range(count - indices, count))
        else:
            take: List[int] = []
            for index in indices:
                absolute = index + count if index < 0 else index
                if not 0 <= absolute < count:
                    raise ValueError(f'stage index {index} is out of range for {count} stages')
                take.append(absolute)
        if len(take) == 0:
            raise ValueError('no stage index was given')
        return take, max(take)

    def forward_intermediates(
            self,
            x: Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Stage outputs (strides 4, 8, 16, 32) and, unless ``intermediates_only``, the final
        feature map.

        Args:
            x: Images ``(N, in_chans, H, W)``.
            indices: Stages to return: ``None`` all, an int the last that many, or a list.
            norm: Accepted for timm's interface; RepNeXt has no final norm.
            stop_early: Run no stage after the last one asked for.
            output_fmt: ``'NCHW'`` (the only layout).
            intermediates_only: Return the stage outputs alone.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"RepNeXt features are NCHW; output_fmt='{output_fmt}' was asked for")
        take, last = self._take_indices(indices)
        intermediates: List[Tensor] = []
        x = self.backbone.stem(x)
        for i, stage in enumerate(self.backbone.stages):
            if i <= last or not stop_early:
                x = stage(x)
                if i in take:
                    intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Drops the stages after the last one in ``indices`` (and the classifier).

        Args:
            indices: As for :meth:`forward_intermediates`.
            prune_norm: Accepted for timm's interface (there is no final norm).
            prune_head: Drop the classifier and pooling; always done when stages go.

        Returns:
            The absolute stage indices.
        """
        take, last = self._take_indices(indices)
        if last < len(self.backbone.stages) - 1:
            self.backbone.stages = self.backbone.stages[:last + 1]
            self.num_features = self.head_hidden_size = self.feature_info[last]['num_chs']
            prune_head = True
        if prune_head:
            self.reset_classifier(0, '')
        return take

    @torch.jit.ignore
    def load_pretrained(self, checkpoint_path: str) -> None:
        """Loads one of the authors' ImageNet release files, any kind (timm calls this for
        ``pretrained_cfg_overlay=dict(file=..., custom_load=True)``); see
        :func:`~.timm_weights.load_release`."""
        load_release(self, checkpoint_path)

    @torch.jit.ignore
    def reparameterize(self) -> None:
        """Fuses in place into the package's deploy form (``RepNeXt(deploy=True)`` and the
        head's one Linear): no SRP branch and no BatchNorm is left."""
        switch_to_deploy_all(self)

