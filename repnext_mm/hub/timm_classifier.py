"""The RepNeXt ImageNet classifier with timm's model interface, built from this package's modules.

:class:`RepNeXtTimm` holds the :class:`~repnext_mm.models.backbones.repnext.RepNeXt` backbone and
the :class:`~repnext_mm.models.heads.repnext_head.RepNeXtClsHead` of the mmpretrain configs
under the names those configs give them (``backbone.``, ``head.``), so a checkpoint of our
mmpretrain classifier, or one of the authors' files converted by :mod:`repnext_mm.deploy.convert`,
is its state dict. It adds only what timm expects of a model: global average pooling,
``forward_features`` / ``forward_head``, intermediate features, pruning, a replaceable classifier,
parameter groups and gradient checkpointing (the backbone's ``with_cp``).

Registered in timm as ``repnext_m0`` .. ``repnext_m5`` by :mod:`repnext_mm.hub.timm_models`.
"""
# No ``from __future__ import annotations``: torch.fx copies forward's annotations into the code
# it generates, and TorchScript then needs them as types, not strings.
import contextlib
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.heads.repnext_head import RepNeXtClsHead
from repnext_mm.models.utils.reparameterize import switch_to_deploy_all
from .timm_weights import load_release

#: ``global_pool`` values: average pooling, or none (``forward`` then returns a map: the features,
#: or the class scores at every position).
POOL_TYPES = ('avg', '')


def _check_head(num_classes: int, global_pool: str) -> None:
    if global_pool not in POOL_TYPES:
        raise ValueError(f'global_pool must be one of {POOL_TYPES} (average pooling, or none), '
                         f'got {global_pool!r}')
    if num_classes < 0:
        raise ValueError(f'num_classes must be >= 0 (0: no classifier), got {num_classes}')


class RepNeXtTimm(nn.Module):
    """RepNeXt classifier: backbone, global average pooling, the two-head classifier.

    Args:
        arch: ``'m0'`` .. ``'m5'`` (or ``dict(widths=..., depths=...)``, as for ``RepNeXt``).
        num_classes: Classes; 0 leaves the classifier out (``forward`` returns pooled features).
        in_chans: Input image channels.
        global_pool: ``'avg'``, or ``''``: no pooling, ``forward`` returns the feature map
            (``num_classes=0``) or the class scores at each of its positions.
        srp_forward: How the training form runs its SRP branches (``RepNeXt``'s argument).
        deploy: Build the fused form directly (no SRP branches, no BatchNorm, one Linear).
        device: Where to create the parameters.
        dtype: Their dtype.
    """

    def __init__(self,
                 arch: Union[str, Dict[str, Any]] = 'm1',
                 num_classes: int = 1000,
                 in_chans: int = 3,
                 global_pool: str = 'avg',
                 srp_forward: str = 'merged',
                 deploy: bool = False,
                 device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        _check_head(num_classes, global_pool)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.backbone = RepNeXt(arch, in_channels=in_chans, out_indices=(0, 1, 2, 3),
                                    srp_forward=srp_forward, deploy=deploy)
            widths = self.backbone.widths
            self.num_features = self.head_hidden_size = widths[-1]
            self.head: Optional[RepNeXtClsHead] = (
                RepNeXtClsHead(num_classes, widths[-1], deploy=deploy) if num_classes else None)
        if dtype is not None:
            self.to(dtype=dtype)
        self.feature_info = [
            dict(num_chs=width, reduction=4 * 2 ** i, module=f'backbone.stages.{i}')
            for i, width in enumerate(widths)]

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
            global_pool: ``'avg'`` or ``''``; ``None`` keeps the current pooling.
        """
        pool = self.global_pool if global_pool is None else global_pool
        _check_head(num_classes, pool)
        self.global_pool = pool
        self.num_classes = num_classes
        if not num_classes:
            self.head = None
            return
        reference = next(self.backbone.parameters())  # the new head joins the model's device/dtype
        with torch.device(reference.device):
            head = RepNeXtClsHead(num_classes, self.num_features)
        self.head = head.to(dtype=reference.dtype).train(self.training)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map ``(N, num_features, H / 32, W / 32)``."""
        x = self.backbone.stem(x)
        for stage in self.backbone.stages:
            x = stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pools the feature map and classifies it (``pre_logits``: only pools).

        Without pooling (``global_pool=''``) the classifier scores each position of the map:
        ``(N, num_classes, H, W)``.
        """
        if self.global_pool == 'avg':
            x = x.mean((2, 3))
        if self.head is None:
            return x
        if pre_logits:
            return x
        if self.global_pool == 'avg':
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

