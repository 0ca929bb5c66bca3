"""tools/deploy/convert_official.py on a synthetic release file of the authors' layout."""
import torch
from mmengine.runner import load_checkpoint

from repnext_mm.apis.model import build_model, load_model_config
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.utils.checkpoint import load_pretrained
from tests.deploy.author_layout import author_checkpoint, author_forward
from tests.helpers import max_rel_error
from tests.helpers import REPO, run_tool

TOOL = 'tools/deploy/convert_official.py'
M1_CLASSIFIER = REPO / 'configs/mmpretrain/repnext_m1_8xb256_in1k.py'


def test_m1_release_converts_for_classifier_and_backbone(tmp_path, capsys):
    src = tmp_path / 'repnext_m1_distill_300e.pth'
    checkpoint = author_checkpoint('m1')
    torch.save(checkpoint, src)

    status, stdout, _ = run_tool(TOOL, [src, tmp_path / 'cls.pth'], capsys)
    assert status == 0
    assert 'RepNeXt-M1 (model): 1022 weights mapped, 0 dropped, 1000 classes' in stdout
    assert 'not converted (training state): optimizer, lr_scheduler, epoch, model_ema, scaler, args' \
        in stdout
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
    assert '1008 weights mapped, 14 dropped' in stdout
    assert stdout.count('dropped head.') == 14
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
    assert 'pass --weights model_ema' in stderr
    status, stdout, _ = run_tool(TOOL, [src, tmp_path / 'out.pth', '--weights', 'model_ema'],
                                 capsys)
    assert status == 0 and 'RepNeXt-M0 (model_ema)' in stdout
