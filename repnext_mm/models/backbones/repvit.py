"""timm's RepViT as a backbone, optionally with RepNeXt's downsample layer: Table 5's RepViT rows.

The paper's Table 5 ends with RepViT-M0.9 (75.19% after 120 epochs) and the same network with
its downsample layers replaced by RepNeXt's (75.32%). Built by composition: timm's
``repvit_m0_9`` (random weights), where each of stages 1-3 starts with a ``RepVitDownsample``
(a RepViT block at the input width, then a stride-2 depthwise 3x3, a 1x1 projection to 2C and a
residual MLP). The swap keeps the RepViT block and replaces the rest (the downsampling proper)
by RepNeXt's :class:`~repnext_mm.models.backbones.repnext.Downsample`: that reading gives the
table's 4.99M parameters exactly (4,986,416 fully fused, 1000 classes, one merged head; replacing
the RepViT block too would give 4.79M). It is clean because RepViT-M0.9's stage widths
(48, 96, 192, 384) double from stage to stage, which is what RepNeXt's downsample layer
(``C -> 2C``) produces, and RepViT's stages use their downsample only as ``self.downsample(x)``.

Fusion: :meth:`RepViTBackbone.switch_to_deploy` fuses RepViT's modules with timm's own
``reparameterize_model`` (their ``fuse()`` methods), which calls the ``switch_to_deploy()`` of
the RepNeXt downsample layers on the way.
"""
from __future__ import annotations

from typing import Sequence

from mmengine.model import BaseModule
from torch import Tensor, nn

from repnext_mm.registry import MODELS
from repnext_mm.utils.errors import InputError
from .repnext import Downsample

#: timm names of the RepViT variants this backbone builds.
REPVIT_MODELS = ('repvit_m0_9', )


@MODELS.register_module()
class RepViTBackbone(BaseModule):
    """timm's RepViT stem and stages, returning the outputs of ``out_indices``.

    Args:
        model_name: The timm model (:data:`REPVIT_MODELS`).
        repnext_downsample: Replace the downsample layer of stages 1-3 by RepNeXt's.
        out_indices: Stages whose outputs are returned (strides 4, 8, 16, 32).
        init_cfg: MMEngine init config.

    Raises:
        InputError: ``model_name`` is not one of :data:`REPVIT_MODELS`, or timm is missing.
    """

    def __init__(self, model_name: str = 'repvit_m0_9', repnext_downsample: bool = False,
                 out_indices: Sequence[int] = (3, ), init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if model_name not in REPVIT_MODELS:
            raise InputError(f'model_name={model_name!r}: expected one of {REPVIT_MODELS}')
        try:
            import timm
        except ImportError as error:
            raise InputError('RepViTBackbone needs timm: pip install timm') from error
        network = timm.create_model(model_name, pretrained=False, num_classes=0)
        if repnext_downsample:
            for stage in list(network.stages)[1:]:
                original = stage.downsample
                in_channels = original.spatial_downsample.c.in_channels
                mlp_ratio = original.ffn.conv1.c.out_channels // (2 * in_channels)
                stage.downsample = nn.Sequential(
                    original.pre_block, Downsample(in_channels, mlp_ratio=mlp_ratio))
        self.stem, self.stages = network.stem, network.stages
        self.out_indices = tuple(out_indices)
        self.repnext_downsample = repnext_downsample

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.stem(x)
        outs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def switch_to_deploy(self) -> None:
        """Fuses every RepViT module (timm's ``fuse``) and RepNeXt downsample layer in place."""
        from timm.utils.model import reparameterize_model

        for name in ('stem', 'stages'):
            holder = nn.Sequential(getattr(self, name))
            setattr(self, name, reparameterize_model(holder, inplace=True)[0])
