"""Reading checkpoint files safely and loading them strictly, with one clear report."""
from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch
from torch import nn

from repnext_mm.apis.checkpoint import (compare_state_dicts, fused_checkpoint_options,
                                        load_state_dict_checked, read_checkpoint, state_dict_of)
from repnext_mm.utils.errors import InputError


class NotAllowListed:
    """A class no allow-list contains: unpickling it needs full (unsafe) unpickling."""

    def __init__(self, value: int = 3) -> None:
        self.value = value


class RunsACommand:
    """A pickle that would call ``os.system`` when unpickled."""

    def __reduce__(self):
        return os.system, ('echo pwned',)


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


# ------------------------------------------------------------------------------------------
# read_checkpoint
# ------------------------------------------------------------------------------------------
def test_namespace_under_args_loads_with_weights_only(tmp_path):
    path = tmp_path / 'release.pth'
    args = argparse.Namespace(model='repnext_m1', lr=1e-3, input_size=224)
    torch.save(dict(model={'w': torch.ones(2)}, args=args, epoch=299), path)
    loaded = read_checkpoint(path)
    assert loaded['args'].model == 'repnext_m1'
    assert torch.equal(loaded['model']['w'], torch.ones(2))


def test_unknown_class_is_named_and_unsafe_loading_stays_opt_in(tmp_path):
    path = tmp_path / 'custom.pth'
    torch.save(dict(model={'w': torch.ones(1)}, extra=NotAllowListed()), path)
    with pytest.raises(InputError) as error:
        read_checkpoint(path, unsafe_hint='--unsafe-full-unpickle')
    message = str(error.value)
    assert f'refers to `{__name__}.NotAllowListed`, which is not allowed' in message
    assert '--unsafe-full-unpickle' in message
    assert read_checkpoint(path, unsafe_full_unpickle=True)['extra'].value == 3


def test_a_pickle_that_runs_a_command_is_called_what_it_is(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={'w': torch.ones(1)}, payload=RunsACommand()), path)
    with pytest.raises(InputError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert f'refers to `{os.system.__module__}.system`, which is not allowed' in message
    assert 'corrupt' not in message and 'truncated' not in message
    # torch's own advice is never echoed, and this caller offers no unsafe option.
    assert 'weights_only' not in message and 'unsafe' not in message


@pytest.mark.parametrize('damage', ['empty', 'truncated', 'random-bytes', 'missing', 'directory'])
def test_damaged_files_give_clear_errors(tmp_path, damage):
    good = tmp_path / 'good.pth'
    torch.save(dict(state_dict={'w': torch.randn(64, 64)}), good)
    bad = tmp_path / 'bad.pth'
    expected = {'empty': r'is empty \(0 bytes\)', 'truncated': 'corrupt or truncated',
                'random-bytes': 'corrupt or truncated', 'missing': 'does not exist',
                'directory': 'is a directory'}[damage]
    if damage == 'empty':
        bad.write_bytes(b'')
    elif damage == 'truncated':
        bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    elif damage == 'random-bytes':
        bad.write_bytes(os.urandom(4096))
    elif damage == 'directory':
        bad.mkdir()
    with pytest.raises(InputError, match=expected) as error:
        read_checkpoint(bad)
    assert 'weights_only' not in str(error.value)


def test_garbage_after_a_pickle_header_is_not_readable(tmp_path):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(pickle.dumps('not a checkpoint')[:5] + b'\x00' * 100)
    with pytest.raises(InputError, match='not a readable PyTorch checkpoint'):
        read_checkpoint(bad)


# ------------------------------------------------------------------------------------------
# state_dict_of / fused meta
# ------------------------------------------------------------------------------------------
def test_a_bare_tensor_is_not_a_checkpoint():
    with pytest.raises(InputError, match='holds a Tensor, not a checkpoint'):
        state_dict_of(torch.ones(3), 'x.pth')


def test_a_dict_without_tensors_names_its_keys():
    with pytest.raises(InputError, match=r'holds no model weights \(top-level keys: epoch, lr\)'):
        state_dict_of(dict(epoch=3, lr=0.1), 'x.pth')


@pytest.mark.parametrize('key', ['state_dict', 'model', 'module'])
def test_state_dict_is_found_under_every_known_key(key):
    assert list(state_dict_of({key: {'w': torch.ones(1)}, 'epoch': 1}, 'x.pth')) == ['w']


def test_fused_options_come_from_the_meta_only():
    options = {'model.backbone.deploy': True, 'model.head.deploy': True}
    fused = dict(state_dict={}, meta=dict(repnext_mm=dict(fused=True, cfg_options=options)))
    assert fused_checkpoint_options(fused) == options
    assert fused_checkpoint_options(dict(state_dict={}, meta=dict(epoch=3))) is None
    assert fused_checkpoint_options(torch.ones(1)) is None


# ------------------------------------------------------------------------------------------
# load_state_dict_checked
# ------------------------------------------------------------------------------------------
def test_matching_weights_load_completely():
    source, target = tiny_model(), tiny_model()
    assert not load_state_dict_checked(target, source.state_dict(), 'src')
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_mismatch_names_counts_and_examples_in_one_line():
    state = tiny_model().state_dict()
    state.pop('0.weight')
    state['extra.weight'] = torch.ones(1)
    state['3.weight'] = torch.ones(5, 4)
    with pytest.raises(InputError) as error:
        load_state_dict_checked(tiny_model(), state, 'ckpt.pth')
    message = str(error.value)
    assert '\n' not in message
    assert 'the weights in ckpt.pth do not fit the model' in message
    assert '1 missing (e.g. 0.weight)' in message
    assert '1 unexpected (e.g. extra.weight)' in message
    assert '1 with the wrong shape (e.g. 3.weight: checkpoint (5, 4) vs model (2, 4))' in message
    assert 'Pass the config the checkpoint was trained with' in message


def test_long_mismatch_lists_are_cut_to_a_few_examples():
    foreign = {f'layer{i}.weight': torch.ones(1) for i in range(200)}
    with pytest.raises(InputError) as error:
        load_state_dict_checked(tiny_model(), foreign, 'resnet.pth')
    message = str(error.value)
    assert '200 unexpected (e.g. layer0.weight, layer1.weight, layer2.weight, ...)' in message
    assert len(message) < 600


def test_a_fused_checkpoint_in_a_training_model_suggests_the_deploy_options():
    state = {'backbone.stages.0.blocks.0.reparam.weight': torch.ones(1)}
    with pytest.raises(InputError, match=r'fused \(deploy\) checkpoint.*model\.backbone\.deploy=True'):
        load_state_dict_checked(tiny_model(), state, 'fused.pth')


def test_an_allowed_partial_load_keeps_the_init_and_says_so():
    source, target = tiny_model(), tiny_model()
    state = source.state_dict()
    state['3.weight'] = torch.ones(7, 4)  # a head for another class count
    state['3.bias'] = torch.ones(7)
    before = target.state_dict()['3.weight'].clone()
    lines = []
    allowed = load_state_dict_checked(target, state, 'coco.pth', allow_mismatch=['3'],
                                      log=lines.append)
    assert [key for key, _, _ in allowed.wrong_shape] == ['3.weight', '3.bias']
    assert torch.equal(target.state_dict()['3.weight'], before)
    assert torch.equal(target.state_dict()['0.weight'], source.state_dict()['0.weight'])
    assert len(lines) == 1 and "partial load of coco.pth (allowed for '3')" in lines[0]
    assert 'keep their initialization' in lines[0]
    # Every re-initialised entry is named, not a few examples: the config chose them.
    assert '2 with the wrong shape (3.weight: checkpoint (7, 4) vs model (2, 4); 3.bias' in lines[0]


def test_an_allowed_prefix_does_not_excuse_other_modules():
    state = tiny_model().state_dict()
    state['0.weight'] = torch.ones(1)
    with pytest.raises(InputError, match=r'1 with the wrong shape \(e\.g\. 0\.weight'):
        load_state_dict_checked(tiny_model(), state, 'x.pth', allow_mismatch=['3'])


def test_prefixes_match_whole_module_names():
    # 'roi_head.fc' must not excuse 'roi_head.fc_cls'.
    mismatch = compare_state_dicts({'roi_head.fc_cls.weight': torch.ones(2)}, {})
    allowed, refused = mismatch.split(['roi_head.fc'])
    assert not allowed and refused.missing == ['roi_head.fc_cls.weight']
    allowed, refused = mismatch.split(['roi_head.fc_cls'])
    assert allowed.missing == ['roi_head.fc_cls.weight'] and not refused


def test_only_a_missing_batch_counter_is_tolerated():
    # As torch's own strict load: checkpoints from before BatchNorm had the counter start it at 0.
    state = tiny_model().state_dict()
    del state['1.num_batches_tracked']
    assert not load_state_dict_checked(tiny_model(), state, 'x.pth')
    del state['1.running_var']
    with pytest.raises(InputError, match=r'1 missing \(e\.g\. 1\.running_var\)'):
        load_state_dict_checked(tiny_model(), state, 'x.pth')


def test_a_mapped_read_gives_the_same_checkpoint(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(state_dict={'w': torch.randn(8, 8)}, meta=dict(epoch=3)), path)
    mapped, read = read_checkpoint(path, mmap=True), read_checkpoint(path)
    assert mapped['meta'] == read['meta'] == dict(epoch=3)
    assert torch.equal(mapped['state_dict']['w'], read['state_dict']['w'])


@pytest.fixture
def test_scheme():
    """A ``repnext-test://`` address, read by a loader registered with MMEngine for the test."""
    from mmengine.runner.checkpoint import CheckpointLoader

    calls = []

    def load_from_repnext_test(filename, map_location=None):
        calls.append((filename, map_location))
        if filename.endswith('missing.pth'):
            raise FileNotFoundError(2, 'No such file or directory')
        return dict(state_dict={'w': torch.ones(2)})

    CheckpointLoader.register_scheme('repnext-test://', load_from_repnext_test)
    yield calls
    CheckpointLoader._schemes.pop('repnext-test://')  # MMEngine has no unregister


def test_an_address_is_read_by_the_loader_mmengine_has_for_it(test_scheme):
    checkpoint = read_checkpoint('repnext-test://weights/a.pth', map_location='cpu')
    assert torch.equal(checkpoint['state_dict']['w'], torch.ones(2))
    assert test_scheme == [('repnext-test://weights/a.pth', 'cpu')]
    with pytest.raises(InputError, match=r'^checkpoint repnext-test://missing\.pth could not be '
                                         r'loaded \(.*No such file'):
        read_checkpoint('repnext-test://missing.pth')
