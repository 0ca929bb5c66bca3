"""tools/deploy/convert_official.py on synthetic files in the authors' published layouts."""
import pytest
import torch
from mmengine.runner import load_checkpoint

from repnext_mm.apis.checkpoint import read_checkpoint
from repnext_mm.apis.model import build_model, load_model_config
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.utils.checkpoint import load_pretrained
from tests.deploy.author_layout import author_checkpoint, author_forward
from tests.helpers import (REPO, SHAPES_CONFIGS, describe_process, max_rel_error, run_tool,
                           run_tool_process)

TOOL = 'tools/deploy/convert_official.py'
M1_CLASSIFIER = REPO / 'configs/mmpretrain/repnext_m1_8xb256_in1k.py'
SHAPES_DETECTOR = SHAPES_CONFIGS['detector']


def test_m1_release_converts_for_classifier_and_backbone(tmp_path, capsys):
    src = tmp_path / 'repnext_m1_distill_300e.pth'
    checkpoint = author_checkpoint('m1')
    torch.save(checkpoint, src)

    status, stdout, _ = run_tool(TOOL, [src, tmp_path / 'cls.pth'], capsys)
    assert status == 0
    assert "found the authors' ImageNet classifier (DeiT-style script, repnext_mX_distill_300e" \
        '.pth): RepNeXt-M1, 1000 classes, weights "model"' in stdout
    assert 'converted 1022 entries' in stdout
    for entry in ('optimizer', 'lr_scheduler', 'epoch', 'model_ema', 'scaler', 'args'):
        assert f'not converted: {entry}: ' in stdout
    assert 'evaluate it with: python tools/test.py configs/mmpretrain/repnext_m1_8xb256_in1k.py ' \
        f'{tmp_path / "cls.pth"}\n' in stdout
    # The classifier file loads strictly into our M1 ImageNet config and computes the authors' model.
    classifier = build_model(load_model_config(M1_CLASSIFIER))
    load_checkpoint(classifier, str(tmp_path / 'cls.pth'), map_location='cpu', strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = classifier(x, mode='tensor')
    assert max_rel_error(logits, author_forward(checkpoint['model'], x, 'm1')) < 1e-4

    status, stdout, _ = run_tool(TOOL, [src, tmp_path / 'backbone.pth', '--task', 'backbone',
                                        '--arch', 'm1'], capsys)
    assert status == 0
    assert 'converted 1008 entries' in stdout
    assert 'left out 14 weight entries, classifier head (not part of the backbone): ' \
        'head.head.norm.weight, ' in stdout
    assert "prefix='backbone.'" in stdout
    # The backbone file is what init_cfg=dict(type='Pretrained', prefix='backbone.') loads.
    backbone = RepNeXt('m1')
    loaded = load_pretrained(backbone, str(tmp_path / 'backbone.pth'), prefix='backbone.')
    assert len(loaded) == len(backbone.state_dict())
    assert torch.equal(backbone.state_dict()['stages.2.blocks.14.token_mixer.medium.conv3x5.weight'],
                       checkpoint['model']['stages.2.blocks.14.token_mixer.conv_m.conv_3_5.weight'])


def test_other_models_and_wrong_arch_fail_with_status_2(tmp_path, capsys):
    other = tmp_path / 'resnet.pth'
    torch.save(dict(model={'conv1.weight': torch.zeros(64, 3, 7, 7)}), other)
    status, _, stderr = run_tool(TOOL, [other, tmp_path / 'out.pth'], capsys)
    assert status == 2 and "not a RepNeXt checkpoint in the authors' layout" in stderr

    src = tmp_path / 'm0.pth'
    torch.save(author_checkpoint('m0', num_classes=10), src)
    status, _, stderr = run_tool(TOOL, [src, tmp_path / 'out.pth', '--arch', 'm2'], capsys)
    assert status == 2 and 'weights are RepNeXt-M0' in stderr
    assert not (tmp_path / 'out.pth').exists()


def test_a_foreign_file_gives_a_short_message_with_the_count(tmp_path, capsys):
    # Another model's bare state dict: hundreds of long top-level keys and no "model" entry.
    foreign = {f'encoder.layers.{i}.attention.self_attention.query_key_value.weight':
               torch.zeros(1) for i in range(300)}
    src = tmp_path / 'foreign.pth'
    torch.save(foreign, src)
    status, _, stderr = run_tool(TOOL, [src, tmp_path / 'out.pth'], capsys)
    assert status == 2
    message = stderr.strip()
    assert '\n' not in message and message.startswith('error: ')
    # Short whatever the keys: under 300 characters besides the path (it used to list them all).
    assert len(message) - len(str(src)) < 300
    assert '300 top-level entries' in message and '(+295 more)' in message
    assert 'encoder.layers.0.' in message and 'encoder.layers.299.' not in message
    # "model" is what was asked for (the default): suggesting --weights model would be no help.
    assert '--weights' not in message
    assert not (tmp_path / 'out.pth').exists()


def test_the_weights_suggestion_names_an_entry_the_file_has(tmp_path, capsys):
    src = tmp_path / 'ema_only.pth'
    torch.save(dict(model_ema=author_checkpoint('m0', num_classes=3)['model'], epoch=3), src)
    status, _, stderr = run_tool(TOOL, [src, tmp_path / 'out.pth'], capsys)
    assert status == 2
    assert 'has no "model" weights (2 top-level entries: model_ema, epoch)' in stderr
    assert 'pass --weights ema to convert the "model_ema" weights it holds' in stderr
    status, stdout, _ = run_tool(TOOL, [src, tmp_path / 'out.pth', '--weights', 'ema'], capsys)
    assert status == 0 and 'RepNeXt-M0, 3 classes, weights "model_ema"' in stdout


@pytest.mark.parametrize('kind, found, config', [
    ('imagenet', "the authors' ImageNet classifier",
     'configs/mmpretrain/repnext_m0_8xb256_in1k.py'),
    ('timm', "an ImageNet classifier from timm's training script",
     'configs/mmpretrain/repnext_m0_8xb256_in1k.py'),
    ('detector', "the authors' Mask R-CNN (mmdet 2.28",
     'configs/mmdet/mask_rcnn_repnext_m0_fpn_1x_coco.py'),
    ('segmentor', "the authors' Semantic FPN (mmseg 0.30",
     'configs/mmseg/fpn_repnext_m0_8xb4-40k_ade20k-512x512.py'),
    ('fused', "the authors' fused TorchScript classifier",
     'configs/mmpretrain/repnext_m0_8xb256_in1k.py'),
])
def test_each_release_says_what_it_is_and_which_config_to_use(releases, tmp_path, capsys, kind,
                                                              found, config):
    dst = tmp_path / 'out.pth'
    status, stdout, _ = run_tool(TOOL, [releases[kind].path, dst], capsys)
    assert status == 0
    assert stdout.startswith(f'found {found}') and 'RepNeXt-M0' in stdout.splitlines()[0]
    command = f'evaluate it with: python tools/test.py {config} {dst}'
    assert command in stdout
    if kind == 'fused':
        assert 'BatchNorm layers (85 entries) folded' in stdout
        assert f'{command} --cfg-options model.backbone.deploy=True model.head.deploy=True' \
            in stdout
    if kind in ('detector', 'segmentor'):
        assert 'not converted: optimizer: optimizer state, for training only' in stdout
        assert 'not converted: meta: mmcv 1.x metadata' in stdout


def test_bad_inputs_fail_with_status_2_and_write_nothing(releases, tmp_path, capsys):
    dst = tmp_path / 'out.pth'
    status, _, stderr = run_tool(TOOL, [releases['detector'].path, dst, '--config',
                                        REPO / 'configs/mmpretrain/repnext_m0_8xb256_in1k.py'],
                                 capsys)
    assert status == 2 and 'builds a classifier; pass a detector config' in stderr
    status, _, stderr = run_tool(TOOL, [releases['segmentor'].path, dst, '--arch', 'm3'], capsys)
    assert status == 2 and '--arch m3 was given but the weights are RepNeXt-M0' in stderr
    status, _, stderr = run_tool(TOOL, [releases['fused'].path, dst, '--weights', 'ema'], capsys)
    assert status == 2 and 'no EMA' in stderr
    assert not dst.exists()


@pytest.mark.slow  # trains Mask R-CNN for a step in a fresh process
def test_a_converted_detector_fine_tunes_with_another_class_count(releases, shapes_data, tmp_path,
                                                                   capsys):
    """load_from a converted release into the 4-class shapes config: the class-dependent layers
    are re-initialised (and named in the log), everything else starts from the release."""
    converted = tmp_path / 'repnext_m0_coco.pth'
    status, stdout, _ = run_tool(TOOL, [releases['detector'].path, converted], capsys)
    assert status == 0
    allowed = ['roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
               'roi_head.mask_head.conv_logits']
    assert f'load_from_allow_mismatch = {allowed}' in stdout

    work_dir = tmp_path / 'work'
    result = run_tool_process(
        'tools/train.py', SHAPES_DETECTOR, '--work-dir', work_dir,
        # The shapes config's FPN and mask head use GroupNorm for its from-scratch demo; the
        # release has the COCO configs' plain heads.
        '--cfg-options', f'load_from={converted}', 'model.neck.norm_cfg=None',
        'model.roi_head.mask_head.norm_cfg=None',
        f'load_from_allow_mismatch=[{",".join(allowed)}]', 'train_cfg.max_epochs=1',
        'train_dataloader.dataset.indices=4', 'val_cfg=None', 'val_dataloader=None',
        'val_evaluator=None', 'randomness.seed=0', timeout=900, env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, describe_process(result)
    log = result.stdout + result.stderr
    reinitialised = [f'{layer}.{p}: checkpoint {shape} vs model' for layer, shapes in zip(
        allowed, (((81, 1024), (81,)), ((320, 1024), (320,)), ((80, 256, 1, 1), (80,))))
        for p, shape in zip(('weight', 'bias'), shapes)]
    assert f'partial load of {converted}' in log
    for entry in reinitialised:
        assert entry in log, entry
    assert 'those entries keep their initialization' in log
    # One step at the warm-up's tiny learning rate: the release's weights are still there.
    trained = read_checkpoint(work_dir / 'epoch_1.pth')['state_dict']
    source = releases['detector'].weights
    for ours, theirs in (('neck.fpn_convs.0.conv.weight', 'neck.fpn_convs.0.conv.weight'),
                         ('roi_head.mask_head.convs.3.conv.weight',
                          'roi_head.mask_head.convs.3.conv.weight'),
                         ('backbone.stem.0.conv.weight', 'backbone.stem.stem.0.conv.weight')):
        assert max_rel_error(trained[ours], source[theirs]) < 1e-2, ours


def test_the_earlier_option_values_still_work(tmp_path, capsys):
    src = tmp_path / 'ema_only.pth'
    torch.save(dict(model_ema=author_checkpoint('m0', num_classes=3)['model'], epoch=3), src)
    status, stdout, _ = run_tool(TOOL, [src, tmp_path / 'out.pth', '--weights', 'model_ema',
                                        '--task', 'cls'], capsys)
    assert status == 0 and 'RepNeXt-M0, 3 classes, weights "model_ema"' in stdout
