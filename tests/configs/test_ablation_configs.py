"""configs/mmpretrain/ablation/: one config per Table 5 row and the M0E-M2E configs.

Each config loads as tools/train.py loads it and builds its classifier (no data, no forward).
The protocol values the authors' logs and argument files fix are asserted, and so are the
training-form parameter counts their logs print ("n_parameters"), which a wrong design preset
would change.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings

from repnext_mm import paper
from repnext_mm.benchmark import ablation
from repnext_mm.models.utils.complexity import count_params
from repnext_mm.zoo import metafiles
from tests.helpers import REPO

ABLATION_DIR = REPO / ablation.CONFIG_DIR
TABLE5_CONFIGS = {design: ablation.row_config(design, REPO) for design in ablation.ROWS}
REPNEXT_ROWS = tuple(paper.ABLATION_M1_120E)
REPVIT_ROWS = tuple(paper.ABLATION_REPVIT_120E)
SINGLE_BRANCH = {
    arch: ABLATION_DIR / f'ablation_repnext_{arch}e_single_branch_4xb512-310e_in1k.py'
    for arch in paper.README_SINGLE_BRANCH}
SINGLE_BRANCH_DISTILL = {
    arch: ABLATION_DIR / f'ablation_repnext_{arch}e_single_branch_4xb256-310e_in1k_distill.py'
    for arch in paper.README_SINGLE_BRANCH}
# "n_parameters" of the authors' 120-epoch logs (github suous/RepNeXt, logs/ablation/): the
# training-form M1 classifier with both heads.
LOGGED_PARAMS = {'no_srp': 5_230_424,  # repnext_m1_120e_7534.txt (Table 5 baseline, 75.34)
                 'repnext': 5_323_316}  # repnext_m1_120e_7597.txt (Table 5 last row, 75.97)
# Peak learning rate of the 120-epoch logs ("train_lr" after warm-up): 1e-3 x 256 x 8 / 512.
LOGGED_PEAK_LR = 4e-3


def load(path: Path) -> Config:
    cfg = Config.fromfile(str(path))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    return cfg


def build_student(cfg: Config):
    """The classifier the config trains (a distillation config's student), as the Runner would."""
    model_cfg = copy.deepcopy(cfg.model)
    if model_cfg.get('teacher') is not None:
        model_cfg = dict(type='ImageClassifier', backbone=model_cfg.backbone,
                         neck=model_cfg.neck, head=model_cfg.head)
    return revert_sync_batchnorm(MODELS.build(model_cfg))


def total_batch(cfg: Config, gpus: int) -> int:
    return gpus * cfg.train_dataloader.batch_size


def scaled_lr(cfg: Config, gpus: int) -> float:
    """The learning rate MMEngine trains at on ``gpus`` GPUs (auto_scale_lr's linear rule)."""
    lr = cfg.optim_wrapper.optimizer.lr
    if cfg.auto_scale_lr.enable:
        lr *= total_batch(cfg, gpus) / cfg.auto_scale_lr.base_batch_size
    return lr


def test_every_table5_row_has_a_config_and_nothing_else_is_there():
    expected = {*TABLE5_CONFIGS.values(), *SINGLE_BRANCH.values(), *SINGLE_BRANCH_DISTILL.values()}
    assert set(ABLATION_DIR.glob('*.py')) == expected
    assert list(TABLE5_CONFIGS) == [*REPNEXT_ROWS, *REPVIT_ROWS]


@pytest.mark.parametrize('design', REPNEXT_ROWS)
def test_table5_config_follows_the_120_epoch_protocol_and_builds(design):
    cfg = load(TABLE5_CONFIGS[design])
    assert cfg.model.backbone.design == design and cfg.model.backbone.arch == 'm1'
    assert cfg.model.type == 'ImageClassifier' and 'teacher' not in cfg.model  # no distillation
    assert cfg.train_cfg.max_epochs == 120
    assert total_batch(cfg, 8) == 2048
    assert scaled_lr(cfg, 8) == pytest.approx(LOGGED_PEAK_LR)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, cosine.type, cosine.eta_min) == (
        'LinearLR', 5, 'CosineAnnealingLR', 1e-5)
    assert warmup.start_factor * cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-6)
    assert 'end' not in cosine  # the Runner ends it at max_epochs = 120
    model = build_student(cfg)
    if design in LOGGED_PARAMS:
        assert count_params(model) == LOGGED_PARAMS[design]


@pytest.mark.parametrize('row', REPVIT_ROWS)
def test_repvit_config_shares_the_protocol_and_matches_table5_size(row):
    from repnext_mm.models.utils.reparameterize import switch_to_deploy_all

    cfg = load(TABLE5_CONFIGS[row])
    base = load(TABLE5_CONFIGS['repnext'])
    for key in ('train_cfg', 'optim_wrapper', 'param_scheduler', 'auto_scale_lr'):
        assert cfg[key] == base[key], key
    assert cfg.train_dataloader.batch_size == base.train_dataloader.batch_size
    backbone = cfg.model.backbone
    assert (backbone.model_name, backbone.get('repnext_downsample', False)) == (
        'repvit_m0_9', row.endswith('_repnext_downsample'))
    model = build_student(cfg).eval()
    switch_to_deploy_all(model)
    # The paper counts the fused model with its two heads merged into one Linear.
    merged_head = sum(p.numel() for p in model.head.parameters())
    assert merged_head == 384 * 1000 + 1000
    assert round(count_params(model) / 1e6, 2) == paper.ABLATION_REPVIT_120E[row].params_m


@pytest.mark.parametrize('arch', sorted(paper.README_SINGLE_BRANCH))
def test_single_branch_configs_follow_the_starnet_recipe_and_build(arch):
    plain, distill = load(SINGLE_BRANCH[arch]), load(SINGLE_BRANCH_DISTILL[arch])
    for cfg in (plain, distill):
        backbone = cfg.model.backbone
        assert (backbone.arch, backbone.design) == (arch, 'single_branch')
        assert cfg.train_cfg.max_epochs == 310  # epochs 300 + cooldown_epochs 10
        assert scaled_lr(cfg, 4) == pytest.approx(3e-3)  # args lr 0.003 as it is, 4 GPUs
        assert cfg.param_scheduler[1].end == 300 and cfg.param_scheduler[1].eta_min == 1e-6
        assert cfg.train_dataloader.sampler.type == 'DefaultSampler'  # aug_repeats: 0
        cutmix = cfg.model.train_cfg.augments[1]
        assert (cutmix.type, cutmix.alpha) == ('CutMix', 0.2)
        rand_augment = next(t for t in cfg.train_dataloader.dataset.pipeline
                            if t.type == 'RandAugment')
        assert rand_augment.magnitude_level == 1  # aa rand-m1-mstd0.5-inc1
    assert total_batch(plain, 4) == 2048 and total_batch(distill, 4) == 1024
    assert plain.model.type == 'ImageClassifier'
    assert distill.model.type == 'repnext_mm.DistillImageClassifier'
    assert distill.model.teacher.model_name == 'regnety_160'
    student = build_student(distill)
    assert count_params(student) == count_params(build_student(plain))
    assert student.backbone.widths[-1] == plain.model.head.in_channels


@pytest.mark.parametrize('design', ['no_srp', 'repnext', 'repvit_m0_9_repnext_downsample'])
def test_metafile_entry_carries_table5(design):
    info = metafiles.read_config(TABLE5_CONFIGS[design], REPO)
    row = ablation.TABLE5[design]
    entry = metafiles.model_entry(info, dict(params=5_000_000, fused_params=4_800_000,
                                             macs=800_000_000))
    assert entry['Results'][0]['Metrics'] == {'Top 1 Accuracy': row.top1}
    assert entry['Metadata']['Latency iPhone 12 (ms, paper)'] == row.iphone12_ms
    assert entry['Metadata']['Results Source'].startswith('paper, Table 5')
    assert entry['Metadata']['Epochs'] == 120 and 'Weights' not in entry


def test_metafile_entry_of_single_branch_carries_the_readme():
    readme = paper.README_SINGLE_BRANCH['m1']
    figures = dict(params=5_000_000, fused_params=4_800_000, macs=800_000_000)
    plain = metafiles.model_entry(metafiles.read_config(SINGLE_BRANCH['m1'], REPO), figures)
    distill = metafiles.model_entry(metafiles.read_config(SINGLE_BRANCH_DISTILL['m1'], REPO),
                                    figures)
    assert plain['Results'][0]['Metrics'] == {'Top 1 Accuracy': readme.top1}
    assert distill['Results'][0]['Metrics'] == {'Top 1 Accuracy': readme.top1_distilled}
    for entry in (plain, distill):
        assert "authors' README" in entry['Metadata']['Results Source']
        assert 'Latency iPhone 12 (ms, paper)' not in entry['Metadata']
        assert 'Weights' not in entry  # no M0E-M2E weights were released
