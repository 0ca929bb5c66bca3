"""RepNeXt classification head for mmpretrain: two BN1d + Linear heads (``head``, ``head_dist``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from repnext_mm.registry import MODELS
from ..layers.reparam import bn_affine, fuse_affine_before_linear

DISTILL_LABEL = 'distill_label'


class NormLinear(nn.Module):
    """BatchNorm1d followed by Linear; fuses into one Linear."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_channels)
        self.linear = nn.Linear(in_channels, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        """Returns one Linear equal to this module in eval mode (this module is left unchanged)."""
        weight, bias = fuse_affine_before_linear(self.linear.weight, self.linear.bias,
                                                 *bn_affine(self.norm))
        fused = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        return fused


@MODELS.register_module()
class RepNeXtClsHead(ClsHead):
    """The authors' classifier head: ``head`` and ``head_dist`` (BN1d + Linear each).

    At inference the logits are the mean of both heads. In training, if the data samples carry
    teacher labels (field ``distill_label``, set by :class:`DistillImageClassifier`), the loss is
    DeiT's hard distillation ``0.5 * CE(head, y) + 0.5 * CE(head_dist, teacher argmax)``;
    otherwise it is the configured loss on the mean logits.

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the last backbone stage (after global pooling).
        distill_weight: Weight of the distillation term (DeiT hard distillation: 0.5).
        deploy: Build the fused form (one Linear) directly.
        **kwargs: Passed to mmpretrain's ``ClsHead`` (``loss``, ``topk``, ``cal_acc``, ``init_cfg``).
    """
    # TorchScript: ``deploy`` is fixed per instance, so only the form built is compiled; the loss
    # (mmpretrain's, not scriptable) and MMEngine's init flag are not part of inference.
    __constants__ = ['deploy']
    __jit_ignored_attributes__ = ['loss_module']
    __jit_unused_properties__ = ['is_init']

    def __init__(self, num_classes: int, in_channels: int, distill_weight: float = 0.5,
                 deploy: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f'distill_weight must be in [0, 1], got {distill_weight}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.distill_weight = distill_weight
        self.deploy = deploy
        if deploy:
            self.fc = nn.Linear(in_channels, num_classes)
        else:
            self.head = NormLinear(in_channels, num_classes)
            self.head_dist = NormLinear(in_channels, num_classes)

    def forward_both(self, feats: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """Returns ``(class logits, distillation logits)`` of the training form."""
        if self.deploy:
            raise RuntimeError('a deployed RepNeXtClsHead has one fused Linear and cannot be trained')
        x = self.pre_logits(feats)
        return self.head(x), self.head_dist(x)

    def logits(self, x: Tensor) -> Tensor:
        """Class scores of pooled features ``(N, in_channels)``: the mean of both heads (one
        fused Linear in the deploy form)."""
        if self.deploy:
            return self.fc(x)
        return (self.head(x) + self.head_dist(x)) / 2

    @torch.jit.unused  # TorchScript cannot type a tuple of any length: scripts call logits()
    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        return self.logits(self.pre_logits(feats))

    def loss(self, feats: tuple[Tensor, ...], data_samples: list[DataSample], **kwargs) -> dict:
        if not data_samples or DISTILL_LABEL not in data_samples[0]:
            return super().loss(feats, data_samples, **kwargs)
        cls_score, dist_score = self.forward_both(feats)
        losses = self._get_loss(cls_score, data_samples, **kwargs)
        teacher = torch.cat([sample.get(DISTILL_LABEL) for sample in data_samples])
        losses['loss'] = losses['loss'] * (1 - self.distill_weight)
        losses['loss_distill'] = self.distill_weight * F.cross_entropy(dist_score, teacher)
        return losses

    @torch.no_grad()
    def fused_linear(self) -> nn.Linear:
        """Returns one Linear equal to the eval-mode head (mean of both fused heads).

        Not named ``fuse``: timm's ``reparameterize_model`` replaces every child that has a
        ``fuse()`` by its result, which would swap this head (pooling, loss, predict) for a bare
        Linear; it calls :meth:`switch_to_deploy` instead.
        """
        if self.deploy:
            return self.fc
        head, head_dist = self.head.fuse(), self.head_dist.fuse()
        head.weight.add_(head_dist.weight).div_(2)
        head.bias.add_(head_dist.bias).div_(2)
        return head

    def switch_to_deploy(self) -> None:
        """Fuses in place (idempotent): ``head`` and ``head_dist`` become one Linear ``fc``."""
        if self.deploy:
            return
        self.fc = self.fused_linear()
        del self.head, self.head_dist
        self.deploy = True
