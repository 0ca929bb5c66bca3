"""The authors' fused TorchScript classifiers (``convert/fused.py``): real TorchScript files of
the authors' fused structure (``release_layout.AuthorFusedRepNext``), scripted and traced."""
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from repnext_mm.apis.checkpoint import (fused_checkpoint_options, load_state_dict_checked,
                                        read_checkpoint)
from repnext_mm.apis.model import build_model, load_model_config
from repnext_mm.deploy.convert import (convert_fused_state_dict, convert_official_checkpoint,
                                       map_fused_key)
from repnext_mm.utils.errors import InputError
from tests.helpers import REPO, first_quick_rest_slow, max_rel_error
from ..author_layout import author_forward
from ..release_layout import AuthorFusedRepNext

DEPLOY = {'model.backbone.deploy': True, 'model.head.deploy': True}
X = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('author_key, ours', [
    ('stem.stem.2.bias', 'backbone.stem.2.conv.bias'),
    ('stages.1.downsample.token_mixer.conv_s.weight',
     'backbone.stages.1.downsample.token_mixer.small.reparam.weight'),
    ('stages.2.blocks.3.token_mixer.conv_m.bias',
     'backbone.stages.2.blocks.3.token_mixer.medium.reparam.bias'),
    ('stages.0.blocks.1.token_mixer.conv_l.1.weight',
     'backbone.stages.0.blocks.1.token_mixer.large.convkx1.weight'),
    ('stages.3.blocks.0.channel_mixer.2.weight',
     'backbone.stages.3.blocks.0.channel_mixer.fc2.conv.weight'),
    ('head.weight', 'head.fc.weight'),
    ('stages.0.blocks.0.norm.weight', None),  # folded, not renamed
    ('stages.0.blocks.0.token_mixer.conv_s.conv_3_3.weight', None),  # training form
])
def test_fused_key_examples(author_key, ours):
    assert map_fused_key(author_key) == ours


def _load_fused(dst, report) -> nn.Module:
    assert report.cfg_options == {**DEPLOY, 'model.head.num_classes': 10}
    model = build_model(load_model_config(REPO / report.config), report.cfg_options)
    load_state_dict_checked(model, read_checkpoint(dst)['state_dict'], str(dst))  # strict
    return model


@pytest.mark.parametrize('how', first_quick_rest_slow(['script', 'trace']))
def test_fused_release_round_trips_with_every_batchnorm_folded(releases, tmp_path, how):
    release = releases['fused']
    src = release.path
    if how == 'trace':  # a traced file records no BatchNorm eps: the default 1e-5 applies
        src = tmp_path / 'traced.pt'
        torch.jit.save(torch.jit.trace(AuthorFusedRepNext.from_training(release.weights, 'm0'),
                                       X), src)
    dst = tmp_path / 'converted.pth'
    report = convert_official_checkpoint(src, dst)
    assert report.source.kind.name == 'fused'
    assert report.config == 'configs/mmpretrain/repnext_m0_8xb256_in1k.py'
    assert len(report.result.folded) == 17 * 5  # 14 blocks + 3 downsamples, 5 entries each

    model = _load_fused(dst, report)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    scripted = torch.jit.load(str(src))
    with torch.no_grad():
        logits, stages = model(X, mode='tensor'), model.backbone(X)
        assert max_rel_error(logits, scripted(X)) < 1e-5
    assert max_rel_error(logits, author_forward(release.weights, X, 'm0')) < 1e-5
    # The classifier config's backbone returns the last stage only.
    theirs = author_forward(release.weights, X, 'm0', with_head=False)
    assert len(stages) == 1 and max_rel_error(stages[0], theirs[-1]) < 1e-5
    # tools/test.py builds the fused model from the file's own record.
    written = read_checkpoint(dst)
    assert fused_checkpoint_options(written) == DEPLOY
    assert written['meta']['repnext_mm']['fused'] is True


def test_a_recorded_batchnorm_eps_is_used(releases, tmp_path):
    module = AuthorFusedRepNext.from_training(releases['fused'].weights, 'm0')
    module.stages[1].downsample.norm.eps = 1e-1  # far from the default: a wrong eps shows
    module.stages[2].blocks[3].norm.eps = 1e-1
    src, dst = tmp_path / 'eps.pt', tmp_path / 'converted.pth'
    torch.jit.save(torch.jit.script(module), src)
    model = _load_fused(dst, convert_official_checkpoint(src, dst))
    with torch.no_grad():
        assert max_rel_error(model(X, mode='tensor'), module(X)) < 1e-5


def test_a_torchscript_file_that_is_not_a_repnext_is_refused(tmp_path):
    src, dst = tmp_path / 'other.pt', tmp_path / 'out.pth'
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())), src)
    with pytest.raises(InputError, match=r"not a RepNeXt checkpoint in the authors' layout: it "
                                         r'has no "stem\.stem\.0\.weight" \(2 tensors, e\.g\. '
                                         r'0\.weight, 0\.bias\)'):
        convert_official_checkpoint(src, dst)
    assert not dst.exists()


def test_fused_files_have_no_ema_and_no_training_backbone(releases, tmp_path):
    dst = tmp_path / 'out.pth'
    with pytest.raises(InputError, match='holds one set of weights and no EMA; drop --weights ema'):
        convert_official_checkpoint(releases['fused'].path, dst, weights='ema')
    with pytest.raises(InputError, match='a fused backbone cannot start a training'):
        convert_official_checkpoint(releases['fused'].path, dst, task='backbone')
    assert not dst.exists()


def test_a_missing_batchnorm_entry_is_named(releases):
    state = dict(torch.jit.load(str(releases['fused'].path)).state_dict())
    del state['stages.2.blocks.4.norm.running_var']
    with pytest.raises(InputError, match=r'complete BatchNorm .*stages\.2\.blocks\.4\.norm\.'
                                         r'running_var'):
        convert_fused_state_dict(state)
