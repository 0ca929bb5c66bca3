"""Errors raised while a config becomes objects: one line naming the failing part's config path.

MMEngine turns a config into objects through registries (``Registry.build``) and a few
``Runner`` methods (the loops, dataloaders, optimizer, parameter schedulers and evaluators). An
exception from deep inside them (``EpochBasedTrainLoop.__init__() got an unexpected keyword
argument``, ``X is not in the mmdet::model registry``, a ``ValueError`` of a model) names
neither the config key nor the fix. While :func:`config_errors` is active, every such build
notes which part of the config it is building; an exception that escapes a build and reaches
:func:`config_errors` becomes one :class:`~repnext_mm.utils.errors.InputError` that starts with
the config path of the part (found by matching the dict being built against the config tree:
``model.backbone``, ``optim_wrapper.optimizer``, ``train_cfg``, ``train_dataloader``) and says
the fix where it can:

- an unknown ``type``: "is not a registered <registry> type; did you mean ...?";
- an argument the class does not take (``train_cfg.max_epochz``): "did you mean ...?";
- a string where the class takes a number (``optimizer.lr=abc``): "is not a number";
- a message that names one of the part's keys with its value (RepNeXt's
  ``out_indices=(0, 1, 2, 7): ...``, torch's ``batch_size=0``): that key's full path;
- anything else: the library's message, once, after the part's path and class.

Only exceptions raised inside a build are converted: an exception from a training or test step
keeps its traceback. ``KeyboardInterrupt``, ``SystemExit``, an ``InputError`` (already one line),
``MemoryError`` and ``OSError``s about the machine rather than a path (a full disk, a read-only
filesystem) pass through unchanged.

Set the environment variable ``REPNEXT_MM_TRACEBACK=1`` to get the original exception and its
traceback instead of the line (for debugging a library or a custom module).
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import difflib
import functools
import inspect
import os
import re
import threading
import traceback
from typing import Any, Callable, Iterator, Mapping, Sequence

from repnext_mm.utils.errors import InputError
from .config import iter_config_dicts, unknown_argument_message

#: Set to ``1`` to see the original exception and traceback instead of the one-line error.
TRACEBACK_VARIABLE = 'REPNEXT_MM_TRACEBACK'

#: ``Runner`` methods that build a config section outside a registry, with the top-level
#: sections their first argument can be (``__init__``: the whole config).
RUNNER_SECTIONS: dict[str, tuple[str, ...]] = {
    '__init__': (),
    'build_train_loop': ('train_cfg', ),
    'build_val_loop': ('val_cfg', ),
    'build_test_loop': ('test_cfg', ),
    'build_optim_wrapper': ('optim_wrapper', ),
    'build_param_scheduler': ('param_scheduler', ),
    'build_dataloader': ('train_dataloader', 'val_dataloader', 'test_dataloader'),
    'build_evaluator': ('val_evaluator', 'test_evaluator'),
}

#: What a ``Runner`` method passes to the class it builds besides the section's keys (not the
#: config's arguments: an unknown key is not told to be one of them).
RUNNER_SUPPLIES: dict[str, tuple[str, ...]] = dict.fromkeys(
    ('build_train_loop', 'build_val_loop', 'build_test_loop'),
    ('runner', 'dataloader', 'evaluator'))

#: ``OSError``s about a path the config names (converted); any other ``OSError`` is the machine's
#: state (no space, read-only filesystem, I/O error) and passes through.
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)

#: Longest library message kept in the line (some dump a whole config).
MAX_MESSAGE = 400
#: Failed builds remembered per session (a library may catch one and go on).
MAX_FAILURES = 16


@dataclasses.dataclass(frozen=True)
class _Build:
    """One config part being built.

    Attributes:
        cfg: The dict being built (a registry build), the section argument of a ``Runner``
            method, or ``None`` (``Runner.__init__``, an argument that is already an object).
        registry: The registry that builds ``cfg``, ``None`` for a ``Runner`` method.
        supplied: Arguments the caller adds (``default_args``): not the config's.
        sections: For a ``Runner`` method, the top-level sections ``cfg`` can be.
    """
    cfg: Any
    registry: Any = None
    supplied: tuple[str, ...] = ()
    sections: tuple[str, ...] | None = None

    @property
    def type_name(self) -> str | None:
        if not isinstance(self.cfg, Mapping) or 'type' not in self.cfg:
            return None
        kind = self.cfg['type']
        return kind if isinstance(kind, str) else getattr(kind, '__name__', str(kind))


@dataclasses.dataclass(frozen=True)
class _Failure:
    """An exception that escaped a build, and the builds in progress (outermost first)."""
    builds: tuple[_Build, ...]
    error: BaseException


class _Session:
    """The builds in progress and the failures of one :func:`config_errors` block."""

    def __init__(self) -> None:
        self.stack: list[_Build] = []
        self.failures: collections.deque[_Failure] = collections.deque(maxlen=MAX_FAILURES)

    @contextlib.contextmanager
    def building(self, build: _Build) -> Iterator[None]:
        self.stack.append(build)
        try:
            yield
        except Exception as error:
            # The innermost build records it; the enclosing builds see the same exception.
            if not any(failure.error is error for failure in self.failures):
                self.failures.append(_Failure(tuple(self.stack), error))
            raise
        finally:
            self.stack.pop()

    def failure_of(self, error: BaseException) -> _Failure | None:
        """The failure ``error`` comes from: itself or an exception it was raised from."""
        chain = _exception_chain(error)
        for cause in reversed(chain):  # the deepest recorded one knows the innermost part
            for failure in self.failures:
                if failure.error is cause:
                    return failure
        return None


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    'repnext_mm_config_build_session', default=None)


def _exception_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)
    return chain


# -------------------------------------------------------------------------------------------
# Tracing the builds: Registry.build and the Runner methods, patched while a session is active
# -------------------------------------------------------------------------------------------
class _Patches:
    """Installs the tracing wrappers while at least one :func:`config_errors` block is active.

    The wrappers are class attributes (every registry and runner in the process sees them) but
    trace only in a context (thread, task) that has a session; elsewhere they just call through.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._originals: list[tuple[type, str, Any]] = []

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                self._install()
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for owner, name, original in reversed(self._originals):
                    setattr(owner, name, original)
                self._originals.clear()

    def _install(self) -> None:
        from mmengine.registry import Registry
        from mmengine.runner import Runner

        self._replace(Registry, 'build', _traced_registry_build(Registry.__dict__['build']))
        for name, sections in RUNNER_SECTIONS.items():
            original = Runner.__dict__[name]
            supplied = RUNNER_SUPPLIES.get(name, ())
            if isinstance(original, staticmethod):
                wrapper = staticmethod(
                    _traced_runner_method(original.__func__, sections, supplied, False))
            else:
                wrapper = _traced_runner_method(original, sections, supplied, True)
            self._replace(Runner, name, wrapper)

    def _replace(self, owner: type, name: str, wrapper: Any) -> None:
        self._originals.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, wrapper)


_PATCHES = _Patches()


def _traced_registry_build(original: Callable) -> Callable:
    @functools.wraps(original)
    def build(self: Any, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        session = _SESSION.get()
        if session is None:
            return original(self, cfg, *args, **kwargs)
        default_args = kwargs.get('default_args', args[0] if args else None)
        supplied = tuple(default_args) if isinstance(default_args, Mapping) else ()
        with session.building(_Build(cfg, registry=self, supplied=supplied)):
            return original(self, cfg, *args, **kwargs)
    return build


def _traced_runner_method(original: Callable, sections: tuple[str, ...],
                          supplied: tuple[str, ...], bound: bool) -> Callable:
    # The section is the method's first argument after ``self`` (none for ``__init__``).
    names = list(inspect.signature(original).parameters)[1 if bound else 0:]
    section_name = names[0] if sections and names else None

    @functools.wraps(original)
    def method(*args: Any, **kwargs: Any) -> Any:
        session = _SESSION.get()
        if session is None:
            return original(*args, **kwargs)
        section = None
        if section_name is not None:
            positional = args[1:] if bound else args
            section = positional[0] if positional else kwargs.get(section_name)
        cfg = section if isinstance(section, (Mapping, list)) else None
        with session.building(_Build(cfg, supplied=supplied, sections=sections)):
            return original(*args, **kwargs)
    return method


# -------------------------------------------------------------------------------------------
# The public context manager
# -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def config_errors(cfg: Any) -> Iterator[None]:
    """Turns an exception that escapes building a part of ``cfg`` into one :class:`InputError`.

    Wrap the construction of the runner and its ``train()`` / ``test()`` (they build the loops,
    optimizer and dataloaders lazily). Nested and concurrent blocks are allowed; each traces the
    builds of its own thread or task.

    Args:
        cfg: The config being built (a ``Config`` or a dict): the paths in the messages are its
            keys.

    Raises:
        InputError: ``"<config path>...: <what is wrong>; <the fix>"`` for an exception raised
            inside a build (unless ``REPNEXT_MM_TRACEBACK=1``); every other exception unchanged.
    """
    session = _Session()
    token = _SESSION.set(session)
    _PATCHES.acquire()
    try:
        yield
    except Exception as error:
        failure = session.failure_of(error)
        if (failure is None or _passes_through(error) or _passes_through(failure.error)
                or os.environ.get(TRACEBACK_VARIABLE, '') not in ('', '0')):
            raise
        raise InputError(describe_failure(cfg, failure.builds, failure.error)) from error
    finally:
        _PATCHES.release()
        _SESSION.reset(token)


def _passes_through(error: BaseException) -> bool:
    """Errors that are not about a config value, or that already are one line."""
    import torch

    if isinstance(error, (InputError, MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, OSError) and not isinstance(error, PATH_ERRORS)


# -------------------------------------------------------------------------------------------
# The message
# -------------------------------------------------------------------------------------------
def describe_failure(cfg: Any, builds: Sequence[_Build], error: BaseException) -> str:
    """One line for ``error`` raised while building the innermost of ``builds`` from ``cfg``."""
    nodes = _config_nodes(cfg)
    paths = _locate(builds, nodes)
    build, path = builds[-1], paths[-1]
    location = next((p for p in reversed(paths) if p is not None), '')
    text = _message(error)
    cls = _build_class(build)
    for explain in (lambda: _unknown_type(build, path, location, error),
                    lambda: _unknown_argument(build, location, error, text, cls),
                    lambda: _named_key(builds, paths, text),
                    lambda: _not_a_number(build, path, location, cls)):
        line = explain()
        if line:
            return line
    where = location or 'config'
    if build.type_name:
        where += f' ({build.type_name})'
    if not text or not isinstance(error, (ValueError, TypeError)):
        text = f'{type(error).__name__}: {text or _failing_line(error)}'
    return f'{where}: {text} ({TRACEBACK_VARIABLE}=1 shows the traceback)'


def _key(path: str | None, location: str, name: str) -> str:
    """The full path of ``name`` in the built part (or in its nearest located enclosing part)."""
    if path is not None:
        return f'{path}.{name}' if path else name
    return f'{location}: {name}' if location else name


def _unknown_type(build: _Build, path: str | None, location: str,
                  error: BaseException) -> str | None:
    type_name = build.type_name
    if not isinstance(error, KeyError) or build.registry is None or \
            not isinstance(build.cfg.get('type'), str):
        return None
    with build.registry.switch_scope_and_registry(build.cfg.get('_scope_')) as registry:
        if registry.get(type_name) is not None:
            return None  # the KeyError came from inside the class
        names = _registered_names(registry)
        scope = registry.scope
    close = difflib.get_close_matches(type_name.rsplit('.', 1)[-1], names, n=1, cutoff=0.6)
    fix = (f'did you mean {names[close[0]]!r}?' if close else
           "check the spelling, or import the module that registers it (custom_imports)")
    return (f'{_key(path, location, "type")}={type_name!r} is not a registered {registry.name} '
            f'type (scope {scope}); {fix}')


def _registered_names(registry: Any) -> dict[str, str]:
    """Each name a build could mean, as the config would write it.

    The names ``registry`` finds itself (its own and its ancestors') as they are; those of the
    other scopes' registries with their scope (``repnext_mm.RepNeXt`` from an mmdet config).
    """
    names: dict[str, str] = {}
    node, chain = registry, []
    while node is not None:
        chain.append(node)
        for name in node.module_dict:
            names.setdefault(name, name)
        node = node.parent
    pending = [chain[-1]]
    while pending:
        node = pending.pop()
        if all(node is not own for own in chain):
            for name in node.module_dict:
                names.setdefault(name, f'{node.scope}.{name}')
        pending.extend(node.children.values())
    return names


def _build_class(build: _Build) -> type | None:
    """The class the build constructs, when the registry knows it."""
    if build.registry is None or not isinstance(build.cfg, Mapping):
        return None
    kind = build.cfg.get('type')
    if isinstance(kind, str):
        try:
            with build.registry.switch_scope_and_registry(build.cfg.get('_scope_')) as registry:
                kind = registry.get(kind)
        except Exception:  # an unknown scope: nothing to say about the class
            return None
    return kind if inspect.isclass(kind) else None


_UNEXPECTED_KEYWORD = re.compile(r"(\w+)(?:\.__init__)?\(\) got an unexpected keyword argument "
                                 r"'(\w+)'")


def _unknown_argument(build: _Build, location: str, error: BaseException, text: str,
                      cls: type | None) -> str | None:
    match = _UNEXPECTED_KEYWORD.search(text)
    if not isinstance(error, TypeError) or not match or not isinstance(build.cfg, Mapping):
        return None
    class_name, name = match.groups()
    if name not in build.cfg:
        return None  # not the config's argument: a library passed it
    if cls is None or cls.__name__ != class_name:
        cls = _class_named(class_name)
    if cls is None:
        return None
    parameters = inspect.signature(cls.__init__).parameters.values()
    accepted = [p.name for p in parameters if p.name != 'self' and p.name not in build.supplied
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return unknown_argument_message(location or 'config', cls.__name__, name, accepted)


def _class_named(name: str) -> type | None:
    """A class the current scope's registries know by ``name`` (a Runner builds some itself)."""
    import mmengine.registry as registries

    for registry in vars(registries).values():
        if isinstance(registry, registries.Registry):
            with contextlib.suppress(Exception):
                with registry.switch_scope_and_registry(None) as scoped:
                    found = scoped.get(name)
                if inspect.isclass(found):
                    return found
    return None


def _not_a_number(build: _Build, path: str | None, location: str,
                  cls: type | None) -> str | None:
    if cls is None or not isinstance(build.cfg, Mapping):
        return None
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    for name, value in build.cfg.items():
        if isinstance(value, str) and name in parameters and _takes_number(parameters[name]):
            default = parameters[name].default
            example = f" ({cls.__name__}'s default is {default})" if _is_number(default) else ''
            try:
                float(value)
            except ValueError:
                return f'{_key(path, location, name)}={value!r} is not a number{example}'
            return (f'{_key(path, location, name)}={value!r} is a string, not a number; write it '
                    f'without quotes{example}')
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _takes_number(parameter: inspect.Parameter) -> bool:
    """The parameter's default is a number, or its annotation names int or float but not str."""
    if _is_number(parameter.default):
        return True
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        return False
    if annotation in (int, float):
        return True
    text = annotation if isinstance(annotation, str) else str(annotation)
    # A number, not a container of numbers, and a string is not accepted
    return (bool(re.search(r'\b(int|float)\b', text))
            and not re.search(r'\b(str|Sequence|list|tuple|dict|List|Tuple|Dict)\b', text))


def _named_key(builds: Sequence[_Build], paths: Sequence[str | None], text: str) -> str | None:
    """``<path>.<key>=<value>: <message>`` when the message names a key of a part with its value.

    The innermost part first: RepNeXt's ``out_indices=(0, 1, 2, 7): ...``, torch's
    ``... but got batch_size=0`` (a key of the dataloader around the batch sampler).
    """
    for build, path in zip(reversed(builds), reversed(paths)):
        if path is None or not isinstance(build.cfg, Mapping):
            continue
        prefix = f'{path}.' if path else ''
        for name, value in build.cfg.items():
            if not isinstance(name, str):
                continue
            if text.startswith(f'{name}='):
                return prefix + text
            if any(f'{name}={shown}' in text for shown in {repr(value), str(value)}):
                return f'{prefix}{name}={value!r}: {text}'
    return None


def _message(error: BaseException) -> str:
    """The exception's text on one line, without MMEngine's "class `X` in module: " prefixes."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]  # str(KeyError) adds quotes
    else:
        text = str(error)
    text = ' '.join(text.split())
    text = re.sub(r'^(?:(?:class|function) `[^`]+` in [\w./]+: )+', '', text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + '...'


def _failing_line(error: BaseException) -> str:
    """Where an exception without a message was raised (a bare ``assert``)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return 'no message'
    frame = frames[-1]
    return f'{(frame.line or "").strip()} ({os.path.basename(frame.filename)}:{frame.lineno})'


# -------------------------------------------------------------------------------------------
# Where in the config: matching the built dicts against the config tree
# -------------------------------------------------------------------------------------------
def _config_nodes(cfg: Any) -> list[tuple[str, Mapping]]:
    """Every dict in ``cfg`` with its dotted path, in the config's order."""
    nodes: list[tuple[str, Mapping]] = []
    items = cfg.items() if hasattr(cfg, 'items') else ()
    for key, value in items:
        nodes.extend(iter_config_dicts(value, key))
    return nodes


def _locate(builds: Sequence[_Build], nodes: list[tuple[str, Mapping]]) -> list[str | None]:
    """The config path of each build (``''``: the whole config; ``None``: not in the config).

    MMEngine and the libraries copy a dict before building it and add keys to it (``train_cfg``
    of a head, ``params`` of an optimizer), so a part matches a config dict of the same type
    whose items it all has; among several, one inside the enclosing part's path is preferred.
    """
    paths: list[str | None] = []
    enclosing: str | None = None
    for build in builds:
        if build.sections is not None:
            path = _locate_section(build, nodes, enclosing)
        else:
            path = _locate_part(build.cfg, nodes, enclosing)
        paths.append(path)
        if path is not None:
            enclosing = path
    return paths


def _locate_section(build: _Build, nodes: list[tuple[str, Mapping]],
                    enclosing: str | None) -> str | None:
    if not build.sections:
        return ''
    if len(build.sections) == 1:
        return build.sections[0]
    found = [key for key, node in nodes if key in build.sections and isinstance(build.cfg, Mapping)
             and _matches(node, build.cfg)]
    # val_dataloader and test_dataloader are often one dict: the enclosing loop tells which.
    phase = (enclosing or '').split('.')[0].split('_')[0]
    found.sort(key=lambda key: key.split('_')[0] != phase)
    return found[0] if found else None


def _locate_part(cfg: Any, nodes: list[tuple[str, Mapping]], enclosing: str | None) -> str | None:
    if not isinstance(cfg, Mapping):
        return None
    inside = [(key, node) for key, node in nodes if _is_within(key, enclosing)]
    for candidates in (inside, nodes):
        matches = [(key, node) for key, node in candidates if _matches(node, cfg)]
        if matches:
            return max(matches, key=lambda match: len(match[1]))[0]
    # Changed on the way (a key replaced): the one dict of that type inside the enclosing part.
    same_type = [key for key, node in inside
                 if 'type' in node and _same(node['type'], cfg.get('type'))]
    return same_type[0] if len(same_type) == 1 else None


def _is_within(key: str, enclosing: str | None) -> bool:
    return not enclosing or key == enclosing or key.startswith(enclosing + '.')


def _matches(node: Mapping, cfg: Mapping) -> bool:
    """``cfg`` is ``node`` built: the same type and every item of ``node`` in it."""
    if not _same(node.get('type'), cfg.get('type')):
        return False
    return all(name in cfg and _same(value, cfg[name]) for name, value in node.items()
               if not (isinstance(name, str) and name.startswith('_') and name.endswith('_')))


def _same(a: Any, b: Any) -> bool:
    """Equal as config values (a list equals the tuple with the same items)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # tensors, arrays: only the same object matches
        return False
