"""Switching whole models (classifier, detector, segmentor) to their fused deploy form."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import DeployError

#: Recorded in ``meta['repnext_mm']`` of every checkpoint written by ``reparameterize``.
FUSED_META_KEY = 'repnext_mm'


def reparameterizable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost submodules of ``model`` that define ``switch_to_deploy()``.

    Only the outermost ones: a module's own ``switch_to_deploy`` fuses its children (e.g.
    ``RepNeXt`` handles its blocks), and calling it on children first would bypass the parent's
    bookkeeping (its ``deploy`` flag).

    Returns:
        ``{qualified name: module}`` in registration order; ``''`` is ``model`` itself.
    """
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not callable(getattr(module, 'switch_to_deploy', None)):
            continue
        if any(name == parent or name.startswith(parent + '.') for parent in found if parent) \
                or '' in found:
            continue
        found[name] = module
    return found


def switch_to_deploy_all(model: nn.Module) -> list[str]:
    """Calls ``switch_to_deploy()`` on every outermost reparameterizable module, in place.

    Args:
        model: Any model; its modules that define ``switch_to_deploy`` (RepNeXt backbone,
            RepNeXt classifier head, and e.g. mmpretrain's RepVGG / MobileOne) are fused.

    Returns:
        Qualified names of the modules that were switched (empty if there were none).
    """
    modules = reparameterizable_modules(model)  # collected first: switching edits the module tree
    for module in modules.values():
        module.switch_to_deploy()
    return list(modules)


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm layers left (a fully fused RepNeXt backbone has none)."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def deploy_cfg_options(cfg_model: Mapping[str, Any], fused_names: list[str]) -> dict[str, bool]:
    """Config overrides that build the fused structure of ``fused_names`` directly.

    Args:
        cfg_model: The config's ``model`` dict.
        fused_names: Qualified module names returned by :func:`switch_to_deploy_all`
            (e.g. ``['backbone', 'head']``).

    Returns:
        ``{'model.backbone.deploy': True, ...}``, for ``Config.merge_from_dict`` and ``--cfg-options``.

    Raises:
        DeployError: A fused module has no config dict of its own at the same path (it was built
            by its parent), so no ``--cfg-options`` entry can build it fused.
    """
    options: dict[str, bool] = {}
    for name in fused_names:
        node: Any = cfg_model
        for part in name.split('.') if name else []:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping) or 'type' not in node:
            raise DeployError(
                f"the fused module 'model.{name}' has no config dict at model.{name}, so its deploy "
                'structure cannot be selected with --cfg-options; give it a "deploy" argument in '
                'the config or build it fused in code.')
        options[f'model.{name}.deploy' if name else 'model.deploy'] = True
    return options


def format_cfg_options(options: Mapping[str, Any]) -> str:
    """``{'model.backbone.deploy': True}`` -> ``'model.backbone.deploy=True'`` (space separated)."""
    return ' '.join(f'{key}={value}' for key, value in options.items())
