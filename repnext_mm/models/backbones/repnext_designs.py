"""The RepNeXt design presets: the released model and the paper's ablation designs.

``RepNeXt(arch, design=NAME)`` builds one of :data:`DESIGNS` (default ``'repnext'``, the released
model). The ablations are those of the paper's Table 5 (Section 4.3, RepNeXt-M1, 120 epochs;
their figures are :data:`repnext_mm.paper.ABLATION_M1_120E`), whose baseline is M1 *without*
SRP, plus the authors' single-branch models M0E-M2E (their README,
:data:`repnext_mm.paper.README_SINGLE_BRANCH`).

Kernel branches are named ``'HxW'`` (a depthwise conv with bias), ``'2x2d'`` (a 2x2 conv with
dilation 2, with bias: the corners of a 3x3) and ``'1xk-kx1'`` (a serial pair, ``1xk`` then
``kx1``, without bias: exactly one ``kxk`` kernel). The first branch of a set is its main kernel,
the size the set fuses into (3x3 small, 7x7 medium).

Readings chosen where the paper does not say (each reproduces Table 5's parameter counts of the
fully fused M1, or comes closest; ``tests/models/backbones/test_repnext_designs.py``):

- ``no_srp``: every reparameterizable conv is its main kernel alone, the copy convolutions of
  the downsample layers too (their SRP kept, the training form would have 22,512 parameters
  more than the 5,230,424 of M1 without SRP).
- ``no_*_kernel``: the chunk convolution keeps its four equal chunks; the removed branch's
  chunk passes through unchanged, as the identity chunk does (three chunks of C/3 would give
  4.84 / 4.78 / 4.82 M instead of the table's 4.81 / 4.77 / 4.79). The copy convolutions keep
  both their kernels. No reading gives no_large_kernel's 4.79: this one is 4.7956 M.
- ``conv3x3_downsample``: the whole downsample layer is one dense 3x3 conv of stride 2 (C -> 2C)
  and a BatchNorm, as the stem's convs: 4.8953 M for the table's 4.89 (a 3x3 token mixer with
  the residual MLP kept would be 5.67 M; only a conv without bias or norm rounds to 4.89).
- ``single_branch``: every chunk convolution is one 11x11 depthwise conv over all channels (the
  identity, small, medium and large kernels padded into one, as the authors' README fuses it)
  and every copy convolution one 7x7 depthwise conv with two outputs per input channel; their
  BatchNorms stay (2,876,420 training-form parameters for M0, the count in the authors' M0E
  training log).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DownsampleKind = Literal['copy_conv', 'conv3x3']
DOWNSAMPLE_KINDS = ('copy_conv', 'conv3x3')
#: The chunk convolution's conv branches, in channel-chunk order after the identity chunk.
CHUNK_BRANCHES = ('small', 'medium', 'large')
#: Kernel branches of the small (3x3) and medium (7x7) sets; the first of each is its main kernel.
#: A set's merged kernel sums its branches in this order (that of the released model's fusion).
SMALL_KERNELS = ('3x3', '2x2d', '1x3', '3x1', '1x3-3x1')
MEDIUM_KERNELS = ('7x7', '5x5', '3x3', '3x5', '5x3', '1x7-7x1', '1x5-5x1')
#: Kernel sizes of the single-branch form: the chunk convolution's (its large kernel) and the
#: copy convolution's (its medium kernel).
SINGLE_BRANCH_KERNELS = dict(chunk=11, copy=7)


@dataclass(frozen=True)
class RepNeXtDesign:
    """How the token mixers of a RepNeXt are built.

    Attributes:
        downsample: ``'copy_conv'``: ``z = BN(CopyConv(x)); y = z + MLP(z)``; ``'conv3x3'``: one
            dense 3x3 conv of stride 2 and a BatchNorm.
        chunk_branches: The chunk convolution's conv branches (of :data:`CHUNK_BRANCHES`); a
            missing one's channel chunk passes through unchanged, like the identity chunk.
        small_kernels: Training branches of the small-kernel conv in the blocks (stride 1).
        small_kernels_stride2: Those of the copy convolution's small-kernel conv (stride 2).
        medium_kernels: Training branches of every medium-kernel conv (both strides).
        single_branch: Every token mixer is one large depthwise kernel, trained as such
            (:data:`SINGLE_BRANCH_KERNELS`); the other fields then keep their defaults.
        description: What the design is (one line).
    """

    downsample: DownsampleKind = 'copy_conv'
    chunk_branches: tuple[str, ...] = CHUNK_BRANCHES
    small_kernels: tuple[str, ...] = ('3x3', '1x3', '3x1', '2x2d')
    small_kernels_stride2: tuple[str, ...] = ('3x3', '1x3-3x1', '2x2d')
    medium_kernels: tuple[str, ...] = ('7x7', '3x5', '5x3', '1x7-7x1', '1x5-5x1')
    single_branch: bool = False
    description: str = ''

    def __post_init__(self) -> None:
        if self.downsample not in DOWNSAMPLE_KINDS:
            raise ValueError(f'downsample={self.downsample!r}: expected one of {DOWNSAMPLE_KINDS}')
        _check_subset('chunk_branches', self.chunk_branches, CHUNK_BRANCHES)
        for name, vocabulary in (('small_kernels', SMALL_KERNELS),
                                 ('small_kernels_stride2', SMALL_KERNELS),
                                 ('medium_kernels', MEDIUM_KERNELS)):
            kernels = getattr(self, name)
            _check_subset(name, kernels, vocabulary)
            if not kernels or kernels[0] != vocabulary[0]:
                raise ValueError(f'{name}={kernels!r}: the main kernel {vocabulary[0]!r} must '
                                 'come first')
        for name in ('small_kernels', 'small_kernels_stride2'):
            kernels = getattr(self, name)
            if '1x3-3x1' in kernels and ({'1x3', '3x1'} & set(kernels)):
                raise ValueError(f'{name}={kernels!r}: the 1x3 and 3x1 strips run either in '
                                 "parallel ('1x3', '3x1') or in series ('1x3-3x1'), not both")
        defaults = {name: field.default for name, field in self.__dataclass_fields__.items()
                    if name not in ('single_branch', 'description')}
        if self.single_branch and any(getattr(self, k) != v for k, v in defaults.items()):
            raise ValueError('a single_branch design has no branch sets or downsample kind to '
                             'choose: leave the other fields at their defaults')


def _check_subset(name: str, values: tuple[str, ...], vocabulary: tuple[str, ...]) -> None:
    if not isinstance(values, tuple) or len(set(values)) != len(values) or \
            not set(values) <= set(vocabulary):
        raise ValueError(f'{name}={values!r}: expected a tuple of distinct names of {vocabulary}')


_NO_SRP = dict(small_kernels=('3x3', ), small_kernels_stride2=('3x3', ), medium_kernels=('7x7', ))
_MEDIUM_STRIPS = ('7x7', '3x5', '5x3', '1x7-7x1', '1x5-5x1')

#: The presets of ``RepNeXt(design=...)``, in the order of the paper's Table 5, then M0E-M2E.
DESIGNS: dict[str, RepNeXtDesign] = {
    'repnext': RepNeXtDesign(description='the released RepNeXt (Table 5, last row: small '
                                         'strips 1x3, 3x1 in parallel)'),
    'no_srp': RepNeXtDesign(**_NO_SRP, description="Table 5's baseline, RepNeXt-M1 without SRP: "
                                                   'every SRP conv its main kernel alone'),
    'conv3x3_downsample': RepNeXtDesign(**_NO_SRP, downsample='conv3x3',
                                        description='no_srp with a 3x3 conv of stride 2 as '
                                                    'each downsample layer'),
    'no_small_kernel': RepNeXtDesign(**_NO_SRP, chunk_branches=('medium', 'large'),
                                     description='no_srp without the small-kernel chunk branch'),
    'no_medium_kernel': RepNeXtDesign(**_NO_SRP, chunk_branches=('small', 'large'),
                                      description='no_srp without the medium-kernel chunk '
                                                  'branch'),
    'no_large_kernel': RepNeXtDesign(**_NO_SRP, chunk_branches=('small', 'medium'),
                                     description='no_srp without the large-kernel chunk branch'),
    'medium_5x5_3x3': RepNeXtDesign(small_kernels=('3x3', ), small_kernels_stride2=('3x3', ),
                                    medium_kernels=('7x7', '5x5', '3x3'),
                                    description='no_srp, medium kernel trained as 7x7 + 5x5 + '
                                                '3x3'),
    'medium_5x3_3x5': RepNeXtDesign(small_kernels=('3x3', ), small_kernels_stride2=('3x3', ),
                                    medium_kernels=('7x7', '3x5', '5x3'),
                                    description='no_srp, medium kernel trained as 7x7 + 5x3 + '
                                                '3x5'),
    'medium_strips': RepNeXtDesign(small_kernels=('3x3', ), small_kernels_stride2=('3x3', ),
                                   medium_kernels=_MEDIUM_STRIPS,
                                   description='no_srp, the full medium kernel: 7x7 + 5x3 + 3x5 '
                                               '+ serial 1x7-7x1 and 1x5-5x1'),
    'small_serial': RepNeXtDesign(small_kernels=('3x3', '1x3-3x1', '2x2d'),
                                  medium_kernels=_MEDIUM_STRIPS,
                                  description='medium_strips, small kernel trained as 3x3 + '
                                              'serial 1x3-3x1 + dilated 2x2'),
    'single_branch': RepNeXtDesign(single_branch=True,
                                   description="the authors' single-branch equivalent (M0E-M2E): "
                                               'each token mixer one large depthwise kernel'),
}
DESIGN_NAMES = tuple(DESIGNS)


def get_design(name: object) -> RepNeXtDesign:
    """The preset called ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`DESIGNS` (one line listing them).
    """
    if not isinstance(name, str) or name not in DESIGNS:
        raise ValueError(f'design={name!r}: expected one of {", ".join(DESIGN_NAMES)}')
    return DESIGNS[name]
