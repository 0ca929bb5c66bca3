"""config_errors: an exception raised while a config part is built is one line with its path.

Toy classes in a registry of their own stand in for the libraries' parts, so nothing here trains
or reads data; tests/tools/test_bad_config_values.py runs the real examples through the tools.
"""
from __future__ import annotations

import errno
import threading

import pytest
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS, Registry
from mmengine.runner import Runner

from repnext_mm.apis.build_errors import TRACEBACK_VARIABLE, config_errors
from repnext_mm.utils.errors import InputError

TOYS = Registry('toy part', scope='repnext_mm_build_errors_test')


@TOYS.register_module()
class Wheel:
    def __init__(self, radius: float = 0.5, spokes: int = 12) -> None:
        if radius <= 0:
            raise ValueError(f'radius={radius}: a wheel needs a positive radius')
        self.radius = radius
        self.spokes = spokes


@TOYS.register_module()
class Cart:
    """Builds its wheels from the config, as a detector builds its backbone and heads."""

    def __init__(self, wheel: dict, axle: dict | None = None, load: float = 0.0) -> None:
        # A copy with a key the config does not have, as mmdet adds train_cfg to a head's dict.
        self.wheel = TOYS.build(dict(wheel, spokes=wheel.get('spokes', 12)))
        self.axle = TOYS.build(axle) if axle else None
        self.load = load


@TOYS.register_module()
class Axle:
    def __init__(self, length: float = 1.0) -> None:
        if length >= 10:  # a bare assert as libraries write them (pytest rewrites real ones)
            raise AssertionError
        self.length = length


@TOYS.register_module()
class Broken:
    def __init__(self) -> None:
        raise RuntimeError('the library itself is broken')


@DATASETS.register_module(name='BuildErrorsTestNumbers', force=True)
class Numbers(BaseDataset):
    def __init__(self, size: int = 8, **kwargs) -> None:
        self.size = size
        super().__init__(serialize_data=False, lazy_init=True, **kwargs)

    def load_data_list(self) -> list[dict]:
        return [dict(value=i) for i in range(self.size)]


def built(cfg: Config, key: str):
    """Builds ``cfg[key]`` inside config_errors(cfg)."""
    with config_errors(cfg):
        return TOYS.build(cfg[key])


def refusal(cfg: Config, key: str) -> str:
    with pytest.raises(InputError) as error:
        built(cfg, key)
    message = str(error.value)
    assert '\n' not in message
    return message


# ------------------------------------------------------------------------ where in the config
def test_a_nested_part_is_named_by_its_full_path():
    cfg = Config(dict(vehicle=dict(type='Cart', wheel=dict(type='Wheel', radius=-1))))
    assert refusal(cfg, 'vehicle') == ('vehicle.wheel.radius=-1: a wheel needs a positive '
                                       'radius')


def test_the_same_dict_elsewhere_in_the_config_is_not_taken_for_the_part():
    # 'spare' equals vehicle.wheel and comes first; the wheel being built is the cart's.
    wheel = dict(type='Wheel', radius=-1)
    cfg = Config(dict(spare=wheel, vehicle=dict(type='Cart', wheel=wheel)))
    assert refusal(cfg, 'vehicle').startswith('vehicle.wheel.radius=-1: ')


def test_a_part_in_a_list_is_named_by_its_index():
    cfg = Config(dict(fleet=[dict(type='Wheel'), dict(type='Wheel', radius=0)]))
    with pytest.raises(InputError, match=r'^fleet\.1\.radius=0: '):
        with config_errors(cfg):
            for part in cfg.fleet:
                TOYS.build(part)


def test_a_message_without_a_key_names_the_part_and_its_class():
    cfg = Config(dict(vehicle=dict(type='Cart', wheel=dict(type='Wheel'),
                                   axle=dict(type='Broken'))))
    message = refusal(cfg, 'vehicle')
    assert message.startswith('vehicle.axle (Broken): RuntimeError: the library itself is broken')
    assert f'{TRACEBACK_VARIABLE}=1' in message


def test_a_bare_assert_shows_the_failing_line():
    cfg = Config(dict(vehicle=dict(type='Cart', wheel=dict(type='Wheel'),
                                   axle=dict(type='Axle', length=20))))
    message = refusal(cfg, 'vehicle')
    assert message.startswith('vehicle.axle (Axle): AssertionError: raise AssertionError '
                              '(test_build_errors.py:'), message


# --------------------------------------------------------------------------- what is wrong
def test_an_unknown_type_gets_did_you_mean():
    cfg = Config(dict(vehicle=dict(type='Cart', wheel=dict(type='Wheell'))))
    assert refusal(cfg, 'vehicle') == ("vehicle.wheel.type='Wheell' is not a registered toy part "
                                       "type (scope repnext_mm_build_errors_test); did you mean "
                                       "'Wheel'?")


def test_an_unknown_type_without_a_close_name_says_how_to_register_it():
    cfg = Config(dict(vehicle=dict(type='Zeppelin')))
    assert 'import the module that registers it (custom_imports)' in refusal(cfg, 'vehicle')


def test_an_unknown_argument_gets_did_you_mean():
    cfg = Config(dict(vehicle=dict(type='Cart', wheel=dict(type='Wheel', radus=1))))
    assert refusal(cfg, 'vehicle') == ("vehicle.wheel: Wheel has no argument 'radus'; did you "
                                       "mean 'radius'?")


def test_a_string_where_a_number_belongs_is_named():
    cfg = Config(dict(vehicle=dict(type='Cart', wheel=dict(type='Wheel', radius='abc'))))
    assert refusal(cfg, 'vehicle') == ("vehicle.wheel.radius='abc' is not a number (Wheel's "
                                       "default is 0.5)")


def test_a_quoted_number_is_told_to_lose_its_quotes():
    cfg = Config(dict(vehicle=dict(type='Cart', wheel=dict(type='Wheel', radius='2'))))
    assert 'is a string, not a number; write it without quotes' in refusal(cfg, 'vehicle')


def test_a_runner_section_is_named_and_its_key_found_in_the_message():
    # Runner.build_dataloader (a staticmethod) builds outside a registry; torch's BatchSampler
    # says "batch_size=0", a key of the dataloader section.
    loader = dict(batch_size=0, num_workers=0, dataset=dict(type='BuildErrorsTestNumbers'),
                  sampler=dict(type='DefaultSampler', shuffle=False))
    cfg = Config(dict(train_dataloader=loader, val_dataloader=dict(loader, batch_size=1)))
    with pytest.raises(InputError, match=r'^train_dataloader\.batch_size=0: .*positive integer'):
        with config_errors(cfg):
            Runner.build_dataloader(cfg.train_dataloader)


# ---------------------------------------------------------------------- what is not converted
def test_an_error_after_the_build_keeps_its_traceback():
    cfg = Config(dict(vehicle=dict(type='Cart', wheel=dict(type='Wheel'))))
    failure = ZeroDivisionError('a step of the work, not a config value')
    with pytest.raises(ZeroDivisionError) as raised:
        with config_errors(cfg):
            TOYS.build(cfg.vehicle)
            raise failure
    assert raised.value is failure


def test_a_build_error_a_caller_handled_does_not_name_a_later_error():
    cfg = Config(dict(vehicle=dict(type='Wheel', radius=-1)))
    with pytest.raises(KeyError, match='later'):
        with config_errors(cfg):
            try:
                TOYS.build(cfg.vehicle)
            except ValueError:
                pass  # a library that falls back
            raise KeyError('later')


@pytest.mark.parametrize('error', [KeyboardInterrupt(), InputError('already one line'),
                                   OSError(errno.ENOSPC, 'No space left on device'),
                                   MemoryError()],
                         ids=['ctrl-c', 'input-error', 'disk-full', 'memory'])
def test_interruptions_input_errors_and_machine_errors_pass_unchanged(monkeypatch, error):
    def fail(self, **kwargs):
        raise error

    monkeypatch.setattr(Axle, '__init__', fail)
    cfg = Config(dict(axle=dict(type='Axle')))
    with pytest.raises(type(error)) as raised:
        built(cfg, 'axle')
    assert raised.value is error


def test_the_traceback_variable_shows_the_original(monkeypatch):
    monkeypatch.setenv(TRACEBACK_VARIABLE, '1')
    cfg = Config(dict(vehicle=dict(type='Wheel', radius=-1)))
    with pytest.raises(ValueError, match='a wheel needs a positive radius'):
        built(cfg, 'vehicle')


def test_the_original_is_chained_for_callers():
    cfg = Config(dict(vehicle=dict(type='Wheel', radius=-1)))
    with pytest.raises(InputError) as raised:
        built(cfg, 'vehicle')
    assert isinstance(raised.value.__cause__, ValueError)


# -------------------------------------------------------------------------- the patching
def test_the_patches_are_removed_afterwards_and_nested_blocks_work():
    original_build, original_loader = Registry.build, Runner.__dict__['build_dataloader']
    cfg = Config(dict(vehicle=dict(type='Wheel', radius=-1)))
    with config_errors(Config(dict())):
        with pytest.raises(InputError, match=r'^vehicle\.radius=-1'):
            built(cfg, 'vehicle')
        assert Registry.build is not original_build  # the outer block still traces
    assert Registry.build is original_build
    assert Runner.__dict__['build_dataloader'] is original_loader


def test_another_thread_is_not_traced():
    cfg = Config(dict(vehicle=dict(type='Wheel', radius=-1)))
    seen = []

    def build_elsewhere():
        try:
            TOYS.build(cfg.vehicle)
        except Exception as error:  # noqa: BLE001 - the test looks at which type arrives
            seen.append(error)

    with config_errors(cfg):
        thread = threading.Thread(target=build_elsewhere)
        thread.start()
        thread.join()
    assert len(seen) == 1 and type(seen[0]) is ValueError
