"""RepNeXt under timm's own scripts: what ``train.py``, ``validate.py`` and ``benchmark.py`` do
with a model, in our words (issue 25).

timm's scripts pass ``drop_rate``, ``drop_path_rate``, ``drop_block_rate``, ``global_pool``,
``bn_momentum``, ``bn_eps`` and ``scriptable`` to every model they create (``create_model``
drops the ones left ``None`` and keeps ``scriptable`` itself). Here they mean what they mean
for timm's own models (``repnext_mm/hub/timm_classifier.py``), and a timm-style training loop
(timm's data loader, optimizer factory with layer decay, loss, EMA, gradient checkpointing,
checkpoint saver) trains the shapes classifier and its checkpoint validates, as ``validate.py``
loads it. The scripts themselves are not part of the timm package; ``docs/timm.md`` lists the
commands run with them.
"""
import argparse
import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import timm
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import CheckpointSaver, ModelEmaV3, accuracy, reparameterize_model

import repnext_mm  # noqa: F401  (registers the models with timm)
from repnext_mm.hub.timm_classifier import POOL_TYPES, RepNeXtTimm
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.utils.reparameterize import count_batchnorms
from tests.helpers import first_quick_rest_slow, max_rel_error, randomize_norms

pytestmark = pytest.mark.usefixtures('one_cpu_thread')

SHAPES_CLASSES = 4

#: What train.py passes to create_model with its default options (``--drop 0``, the others
#: ``None``), and with every one of them set.
TRAIN_PY_DEFAULTS = dict(in_chans=3, num_classes=None, drop_rate=0.0, drop_path_rate=None,
                         drop_block_rate=None, global_pool=None, bn_momentum=None, bn_eps=None,
                         scriptable=False, checkpoint_path=None)
TRAIN_PY_ALL_SET = dict(in_chans=3, num_classes=SHAPES_CLASSES, drop_rate=0.2,
                        drop_path_rate=0.1, drop_block_rate=0.0, global_pool='avg',
                        bn_momentum=0.05, bn_eps=1e-3, scriptable=True, checkpoint_path=None)
#: What benchmark.py passes (``gp`` and ``num_classes`` unset; ``scriptable`` is --torchscript).
BENCHMARK_PY = dict(num_classes=None, in_chans=3, global_pool=None, drop_rate=0.0,
                    drop_path_rate=None, drop_block_rate=None)


def _images(size: int = 64, count: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _batchnorms(model: torch.nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


# ---------------------------------------------------------------------------------------------
# timm's standard model arguments
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', first_quick_rest_slow(('m0', 'm5')))  # the ends of the range
@pytest.mark.parametrize('kwargs', [TRAIN_PY_DEFAULTS, TRAIN_PY_ALL_SET, BENCHMARK_PY],
                         ids=['train.py defaults', 'train.py all set', 'benchmark.py'])
def test_the_scripts_arguments_create_the_models(arch, kwargs):
    model = timm.create_model(f'repnext_{arch}', device='meta', **kwargs)
    assert type(model) is RepNeXtTimm
    assert model.num_classes == (kwargs['num_classes'] or 1000)


def test_the_issues_example_and_the_default_model_unchanged():
    torch.manual_seed(0)
    model = timm.create_model('repnext_m0', num_classes=4, drop_rate=0.2, drop_path_rate=0.1,
                              global_pool='avg')
    assert model.head_drop.p == 0.2 and model.global_pool == 'avg'
    rates = RepNeXt.drop_path_rates(0.1, RepNeXt.arch_settings['m0']['depths'])
    assert rates[0][0] == 0.0 and rates[-1][-1] == pytest.approx(0.1)
    assert model.backbone.stages[3].blocks[0].drop_path.drop_prob == pytest.approx(0.1)
    with torch.no_grad():
        assert model.eval()(_images()).shape == (4, 4)
    # the options add no weight: the state dict is the default model's, key for key
    torch.manual_seed(0)
    default = timm.create_model('repnext_m0', num_classes=4)
    expected = default.state_dict()
    assert list(expected) == list(model.state_dict())
    with torch.no_grad():
        default.eval()
        for key, value in model.state_dict().items():
            assert torch.equal(value, expected[key]), key
        assert torch.equal(model(_images()), default(_images()))


@pytest.fixture(scope='module')
def dropping() -> RepNeXtTimm:
    """RepNeXt-M0 with drop path 0.5, non-trivial BatchNorms, in eval mode."""
    torch.manual_seed(0)
    return randomize_norms(timm.create_model('repnext_m0', num_classes=4,
                                             drop_path_rate=0.5)).eval()


def test_drop_path_drops_in_training_only(dropping):
    x = _images()
    training = copy.deepcopy(dropping).train()  # (its forwards move the BatchNorm statistics)
    with torch.no_grad():
        assert not torch.allclose(training(x), training(x))
        assert torch.equal(dropping(x), dropping(x))


def test_the_fused_model_equals_the_eval_model_with_drop_path(dropping):
    x = _images()
    with torch.no_grad():
        expected = dropping(x)
    ours = copy.deepcopy(dropping)
    ours.reparameterize()
    for fused in (reparameterize_model(dropping), ours):
        assert count_batchnorms(fused) == 0
        assert not any('DropPath' in type(m).__name__ for m in fused.modules())
        with torch.no_grad():
            assert max_rel_error(fused(x), expected) < 1e-5


def test_drop_rate_is_dropout_before_the_classifier():
    model = timm.create_model('repnext_m0', num_classes=4, drop_rate=0.5)
    features = torch.rand(2, 320, 2, 2) + 0.5
    pooled = features.mean((2, 3))
    torch.manual_seed(0)
    dropped = model.train().forward_head(features, pre_logits=True)
    kept = dropped != 0
    assert 0 < kept.sum() < kept.numel()  # about half of 640
    assert torch.allclose(dropped[kept], 2 * pooled[kept])  # kept ones scaled by 1 / (1 - p)
    assert torch.equal(model.eval().forward_head(features, pre_logits=True), pooled)


@pytest.mark.parametrize('global_pool', POOL_TYPES)
def test_global_pool_is_timms_pooling(global_pool):
    model = timm.create_model('repnext_m0', num_classes=3, global_pool=global_pool).eval()
    features = torch.randn(2, 320, 3, 2)
    mean, peak = features.mean((2, 3)), features.amax((2, 3))
    plain = global_pool[len('fast'):] if global_pool.startswith('fast') else global_pool
    expected = {'avg': mean, 'max': peak, 'avgmax': (mean + peak) / 2,
                'catavgmax': torch.cat((mean, peak), 1), '': features}[
        plain or ('avg' if global_pool == 'fast' else '')]  # 'fast' alone: the average
    with torch.no_grad():
        pre_logits = model.forward_head(features, pre_logits=True)
        assert max_rel_error(pre_logits, expected) < 1e-6
        logits = model(_images())
    assert model.head.in_channels == expected.shape[1]  # catavgmax: twice the features
    assert logits.shape == ((4, 3, 2, 2) if global_pool == '' else (4, 3))


def test_reset_classifier_takes_a_pooling_and_refuses_an_unknown_one():
    model = timm.create_model('repnext_m0', num_classes=3).eval()
    model.reset_classifier(5, 'catavgmax')
    assert model.global_pool == 'catavgmax' and model.head.in_channels == 640
    with torch.no_grad():
        assert model.eval()(_images()).shape == (4, 5)
    fused = reparameterize_model(model)
    with torch.no_grad():
        assert max_rel_error(fused(_images()), model(_images())) < 1e-5
    model.reset_classifier(0, '')
    with torch.no_grad():
        assert model(_images()).shape == (4, 320, 2, 2)
    with pytest.raises(ValueError, match="global_pool='median': expected one of"):
        model.reset_classifier(5, 'median')


def test_drop_block_rate_zero_is_accepted_and_a_rate_refused():
    timm.create_model('repnext_m0', device='meta', drop_block_rate=0.0)
    with pytest.raises(ValueError, match=r'drop_block_rate=0.1: RepNeXt has no DropBlock .* '
                                         'drop_path_rate'):
        timm.create_model('repnext_m0', device='meta', drop_block_rate=0.1)


def test_bn_momentum_and_eps_reach_every_batchnorm_and_a_new_classifier():
    model = timm.create_model('repnext_m0', num_classes=3, bn_momentum=0.01, bn_eps=1e-3)
    model.reset_classifier(7)
    norms = _batchnorms(model)
    assert len(norms) == count_batchnorms(timm.create_model('repnext_m0', device='meta'))
    assert {(norm.momentum, norm.eps) for norm in norms} == {(0.01, 1e-3)}
    assert {(n.momentum, n.eps) for n in _batchnorms(
        timm.create_model('repnext_m0', device='meta'))} == {(0.1, 1e-5)}  # unset: PyTorch's
    # the fusion folds each BatchNorm with its own eps
    model = randomize_norms(model).eval()
    with torch.no_grad():
        assert max_rel_error(reparameterize_model(model)(_images()),
                             model(_images())) < 1e-5


@pytest.mark.parametrize('name, value, accepted', [
    ('drop_rate', 1.0, 'a number in [0, 1)'), ('drop_rate', -0.1, 'a number in [0, 1)'),
    ('drop_path_rate', 1.5, 'a number in [0, 1)'), ('bn_momentum', 2.0, 'a number in [0, 1]'),
    ('bn_eps', 0.0, 'a positive number'), ('drop_block_rate', 'x', 'a number in [0, 1)')])
def test_a_value_outside_what_an_option_accepts_is_refused(name, value, accepted):
    with pytest.raises(ValueError) as error:
        timm.create_model('repnext_m0', device='meta', **{name: value})
    assert str(error.value).startswith(f'{name}={value!r}: expected {accepted}'), error.value


def test_scriptable_models_script_with_their_drop_path_and_pooling():
    torch.manual_seed(0)
    model = timm.create_model('repnext_m0', num_classes=4, drop_path_rate=0.5, drop_rate=0.2,
                              global_pool='catavgmax', scriptable=True)
    scripted = torch.jit.script(copy.deepcopy(model))
    x = _images()
    with torch.no_grad():
        assert max_rel_error(scripted.eval()(x), model.eval()(x)) < 1e-5
        scripted.train()
        assert not torch.allclose(scripted(x), scripted(x))  # training: drops


# ---------------------------------------------------------------------------------------------
# train.py and validate.py: a timm training loop on the shapes data, its checkpoint validated
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def trained(shapes_data, tmp_path_factory):
    """Three steps of timm's recipe on the shapes data (64x64, batch 8), saved by timm's
    checkpoint saver as train.py saves: ``(model, ema, first weights, last.pth.tar)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_cpu_thread, which a module fixture cannot use
    try:
        torch.manual_seed(0)
        model = timm.create_model('repnext_m0', **dict(
            TRAIN_PY_DEFAULTS, num_classes=SHAPES_CLASSES, drop_rate=0.1, drop_path_rate=0.1))
        model.set_grad_checkpointing()
        first = copy.deepcopy(model.state_dict())
        optimizer = create_optimizer_v2(model, opt='adamw', lr=1e-3,
                                                   weight_decay=0.05, layer_decay=0.8)
        criterion = LabelSmoothingCrossEntropy(smoothing=0.1)
        ema = ModelEmaV3(model, decay=0.5)
        dataset = create_dataset('', root=str(shapes_data / 'imagenet' / 'train'),
                                 is_training=True)
        loader = create_loader(dataset, input_size=(3, 64, 64), batch_size=8, is_training=True,
                               use_prefetcher=False, num_workers=0, device=torch.device('cpu'),
                               persistent_workers=False)
        model.train()
        for step, (images, targets) in zip(range(3), loader):
            loss = criterion(model(images), targets)
            assert torch.isfinite(loss), step
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.update(model, step=step)
        folder = tmp_path_factory.mktemp('timm_train')
        saver = CheckpointSaver(model, optimizer, args=argparse.Namespace(
            model='repnext_m0'), model_ema=ema, checkpoint_dir=str(folder), max_history=1)
        saver.save_checkpoint(epoch=0)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), ema.module.eval(), first, folder / 'last.pth.tar'


def test_the_training_loop_trains_with_checkpointing_and_ema(trained):
    model, ema, first, _ = trained
    assert model.backbone.with_cp
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, first[k])]
    assert 'backbone.stem.0.conv.weight' in changed and 'head.head.linear.weight' in changed
    ema_state = ema.state_dict()
    assert not torch.equal(ema_state['head.head.linear.weight'],
                           model.state_dict()['head.head.linear.weight'])


@pytest.mark.parametrize('use_ema', [False, True], ids=['weights', 'ema'])
def test_the_checkpoint_validates_as_validate_py_loads_it(trained, shapes_data, use_ema):
    model, ema, _, checkpoint = trained
    reference = ema if use_ema else model
    # validate.py: create_model(name, num_classes, in_chans, global_pool=--gp, scriptable),
    # then load_checkpoint(model, --checkpoint, --use-ema); --reparam fuses it
    loaded = timm.create_model('repnext_m0', num_classes=SHAPES_CLASSES, in_chans=3,
                               global_pool=None, scriptable=False)
    timm.models.load_checkpoint(loaded, str(checkpoint), use_ema=use_ema)
    loaded.eval()
    config = resolve_data_config(dict(img_size=64), model=loaded)
    assert config['input_size'] == (3, 64, 64)
    dataset = create_dataset('', root=str(shapes_data / 'imagenet' / 'val'))
    loader = create_loader(dataset, batch_size=16, use_prefetcher=False, num_workers=0,
                           device=torch.device('cpu'), persistent_workers=False, **config)
    images, targets = next(iter(loader))
    with torch.no_grad():
        logits = loaded(images)
        assert torch.equal(logits, reference(images))
        fused = reparameterize_model(loaded)
        assert max_rel_error(fused(images), logits) < 1e-5
    top1, = accuracy(logits, targets, topk=(1,))
    assert 0 <= top1.item() <= 100 and logits.shape == (16, SHAPES_CLASSES)


# ---------------------------------------------------------------------------------------------
# benchmark.py: --bench infer / train, with its --reparam, --torchscript, --channels-last,
# --grad-checkpointing
# ---------------------------------------------------------------------------------------------
def _benchmark_model(reparam: bool, torchscript: bool, channels_last: bool) -> torch.nn.Module:
    """What benchmark.py's runner builds before it times anything."""
    model = timm.create_model('repnext_m0', scriptable=torchscript, **BENCHMARK_PY)
    if reparam:
        model = reparameterize_model(model)
    model.to(memory_format=torch.channels_last if channels_last else None)
    return torch.jit.script(model) if torchscript else model


@pytest.mark.parametrize('reparam, torchscript, channels_last', [
    (False, False, False), (True, True, True)],
    ids=['plain', 'reparam-torchscript-channels-last'])
def test_benchmark_py_inference(reparam, torchscript, channels_last):
    torch.manual_seed(0)
    model = _benchmark_model(reparam, torchscript, channels_last).eval()
    x = _images(count=2).contiguous(memory_format=torch.channels_last if channels_last else
                                    torch.contiguous_format)
    with torch.no_grad():
        outputs = [model(x) for _ in range(2)]  # warm-up and one timed iteration
    assert outputs[0].shape == (2, 1000) and torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize('torchscript, grad_checkpointing', [
    (False, True), pytest.param(True, False, marks=pytest.mark.slow)],  # scripting: ~3 s
    ids=['grad-checkpointing', 'torchscript'])
def test_benchmark_py_train(torchscript, grad_checkpointing):
    torch.manual_seed(0)
    model = _benchmark_model(False, torchscript, False).train()
    optimizer = create_optimizer_v2(model, opt='sgd', lr=1e-4)
    if grad_checkpointing:
        model.set_grad_checkpointing()
    before = next(model.parameters()).detach().clone()
    criterion = torch.nn.CrossEntropyLoss()
    for _ in range(2):
        optimizer.zero_grad()
        output = model(_images(count=2))
        criterion(output, torch.tensor([1, 999])).backward()
        optimizer.step()
    assert output.shape == (2, 1000)
    assert not torch.equal(next(model.parameters()), before)
