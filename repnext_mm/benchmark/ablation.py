"""What each row of the paper's Table 5 (the ablation, RepNeXt-M1) costs on this machine.

Every row is built from its config under ``configs/mmpretrain/ablation/`` (the ``design`` preset
of ``RepNeXt`` named there; the two RepViT rows: timm's RepViT-M0.9, with RepNeXt's downsample
layer in the second, :mod:`repnext_mm.models.backbones.repvit`), so the table measures what the
configs train. Per row:

- parameters of the whole classifier in the training form and fully fused (every SRP branch
  set and BatchNorm folded: ``switch_to_deploy_all``), and the fused model's MACs at 224x224
  (:func:`repnext_mm.models.utils.complexity.count_macs`, the model zoo's counter);
- the fused classifier's latency at 224x224, batch 1, eager torch at ``threads`` threads;
- one training step (forward and backward, :func:`repnext_mm.benchmark.training.training_step`)
  of the backbone in its training form with ``srp_forward='merged'`` (RepNeXt's default; the
  RepViT rows' RepNeXt downsample layers run that way too).

All rows' forwards are timed in one round-robin, then all rows' training steps in another
(:func:`repnext_mm.benchmark.timing.round_robin`), so every row sees the same machine load, and
each time is also given as the median of per-round ratios to the ``'no_srp'`` baseline (Table
5's reference row), which is always measured.

The command line is ``tools/analysis/ablation_cost.py``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from repnext_mm import paper
from repnext_mm.utils.errors import InputError
from .runtimes import describe_cpu, torch_runner, torch_threads
from .tables import markdown_table
from .timing import TimingStats, paired_ratio, round_robin
from .training import TRAIN_BATCH, training_step

#: Table 5's figures by row: the RepNeXt-M1 rows by ``design`` preset, then the RepViT rows.
TABLE5 = {**paper.ABLATION_M1_120E, **paper.ABLATION_REPVIT_120E}
#: The rows in the table's order.
ROWS = tuple(TABLE5)
#: The row every ratio divides by: Table 5's baseline, RepNeXt-M1 without SRP.
BASELINE = 'no_srp'
CONFIG_DIR = 'configs/mmpretrain/ablation'
CONFIG_NAME = 'ablation_repnext_{model}_8xb256-120e_in1k.py'  # model: m1_<design> or a RepViT row
IMAGE_SIZE = 224


def row_config(design: str, root: Path | None = None) -> Path:
    """The config of one Table 5 row, under ``root`` (default: the package's model zoo)."""
    if design not in ROWS:
        raise InputError(f'unknown Table 5 row {design!r}; choose from {", ".join(ROWS)}')
    if root is None:
        from repnext_mm.zoo.model_index import zoo_root
        root = zoo_root()
    model = design if design in paper.ABLATION_REPVIT_120E else f'm1_{design}'
    return root / CONFIG_DIR / CONFIG_NAME.format(model=model)


@dataclass
class RowModels:
    """One row's models: the classifier in its two forms and the backbone to train."""
    design: str
    classifier: nn.Module  # training form, eval mode
    fused: nn.Module  # every reparameterizable module switched to deploy, eval mode
    backbone: nn.Module  # training form (srp_forward='merged'), train mode


def build_row(design: str, root: Path | None = None) -> RowModels:
    """Builds one row's classifier from its config (random weights, CPU)."""
    from repnext_mm.apis.model import build_model, load_model_config
    from repnext_mm.models.utils.reparameterize import switch_to_deploy_all

    cfg = load_model_config(row_config(design, root))
    repnext = design in paper.ABLATION_M1_120E
    classifier = build_model(cfg, {'model.backbone.srp_forward': 'merged'} if repnext else None)
    fused = copy.deepcopy(classifier)
    switch_to_deploy_all(fused)
    backbone = copy.deepcopy(classifier.backbone).train()
    return RowModels(design, classifier, fused.eval(), backbone)


@dataclass
class RowCost:
    """One row's measured cost; times in the timer's summary, ratios to :data:`BASELINE`."""
    design: str
    params: int
    fused_params: int
    macs: int
    latency: TimingStats
    step: TimingStats
    latency_ratio: float
    step_ratio: float


def _ratio_cell(value: float, baseline: float, digits: int) -> str:
    return f'{value:.{digits}f} ({value / baseline:.3f})'


def cost_rows(costs: Sequence[RowCost]) -> list[dict[str, str]]:
    """The table's rows: the paper's Table 5 figures beside the measured ones.

    Every measured cell reads ``value (ratio to the no_srp row)``.
    """
    base = next(c for c in costs if c.design == BASELINE)
    rows = []
    for cost in costs:
        published = TABLE5[cost.design]
        rows.append({
            'row (design)': cost.design,
            'Table 5 variant': published.variant,
            'paper params (M)': f'{published.params_m:.2f}',
            'paper iPhone 12 (ms)':
                f'{published.iphone12_ms:.2f} ± {published.iphone12_std_ms:.2f}',
            'paper top-1 (%)': f'{published.top1:.2f}',
            'params, training (M)': _ratio_cell(cost.params / 1e6, base.params / 1e6, 3),
            'params, fused (M)': _ratio_cell(cost.fused_params / 1e6, base.fused_params / 1e6, 3),
            'GMACs (fused, 224)': _ratio_cell(cost.macs / 1e9, base.macs / 1e9, 3),
            'latency (ms)': f'{cost.latency.median_ms:.2f} ({cost.latency_ratio:.3f})',
            'train step (ms)': f'{cost.step.median_ms:.0f} ({cost.step_ratio:.3f})',
        })
    return rows


def measure_ablation(designs: Sequence[str] | None = None, runs: int = 20, warmup: int = 3,
                     threads: int = 1, batch_size: int = TRAIN_BATCH, root: Path | None = None,
                     progress: bool = True) -> list[RowCost]:
    """Builds and measures the given Table 5 rows (all by default) and the baseline.

    Args:
        designs: Rows of :data:`ROWS` (design presets, RepViT rows); :data:`BASELINE` is added
            if missing.
        runs: Timed rounds of each round-robin (forwards, training steps).
        warmup: Untimed rounds before them.
        threads: Torch intra-op threads for every timed call.
        batch_size: Images per training step (224x224).
        root: The folder holding ``configs/`` (default: the package's model zoo).
        progress: Show the timer's progress on stderr.

    Returns:
        One :class:`RowCost` per row, in Table 5's order.

    Raises:
        InputError: An unknown row, or ``runs`` / ``threads`` / ``batch_size`` below 1.
    """
    from repnext_mm.models.utils.complexity import count_macs, count_params

    wanted = set(designs or ROWS)
    unknown = sorted(wanted - set(ROWS))
    if unknown:
        raise InputError(f'unknown Table 5 row(s) {", ".join(unknown)}; choose from '
                         f'{", ".join(ROWS)}')
    if batch_size < 1:
        raise InputError(f'batch_size must be >= 1, got {batch_size}')
    order = [design for design in ROWS if design in wanted | {BASELINE}]
    torch.manual_seed(0)
    models = {design: build_row(design, root) for design in order}
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    batch = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch_threads(threads):
        forwards = {d: torch_runner(m.fused, image) for d, m in models.items()}
        steps = {d: (lambda model=m.backbone: training_step(model, batch))
                 for d, m in models.items()}
        latency = round_robin(forwards, warmup, runs, progress=progress, label='fused forward')
        step = round_robin(steps, warmup, runs, progress=progress, label='training step')
    costs = []
    for design, row in models.items():
        costs.append(RowCost(
            design=design, params=count_params(row.classifier),
            fused_params=count_params(row.fused),
            macs=count_macs(row.fused, image),
            latency=TimingStats.from_seconds(latency[design]),
            step=TimingStats.from_seconds(step[design]),
            latency_ratio=paired_ratio(latency[design], latency[BASELINE]),
            step_ratio=paired_ratio(step[design], step[BASELINE])))
    return costs


def report(costs: Sequence[RowCost], threads: int, batch_size: int) -> str:
    """The Markdown table and a line saying how it was measured."""
    runs = costs[0].latency.runs
    note = (f'Measured on {describe_cpu()}, torch {torch.__version__}, {threads} thread(s), '
            f'{runs} interleaved rounds: latency = fused classifier, 224x224, batch 1 (median); '
            f'train step = backbone forward + backward, srp_forward=merged, batch {batch_size} at '
            f'224x224 (median). Parenthesized: ratio to the {BASELINE} row (times: median of '
            'per-round ratios).')
    rows = cost_rows(costs)
    return markdown_table(rows, list(rows[0])) + '\n\n' + note
