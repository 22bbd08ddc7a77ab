"""``plugins=`` on whatever backbone a config has, without changing its class or any other argument.

``import snl_mm`` wraps the build function of mmengine's model registries once (:func:`apply`, a row of
:mod:`snl_mm.patches`: the root ``MODELS`` and every child, registered now or later). When a config gives
``plugins``:

* to a class without such an argument (or one upstream does not implement, mmseg's UNet), the class is built
  without it and :func:`~snl_mm.plugins.insert.add_plugins` puts the blocks in;
* to a class whose own ``plugins`` implements mmdetection's design (:func:`~snl_mm.plugins.sites.register_native`),
  the entries in that form go to upstream untouched (checked first with upstream's exception types:
  :func:`~snl_mm.plugins.entries.check_native`), the others (the package's fields) to ``add_plugins``;
* to any other class with a ``plugins`` argument (the package's ``snl_mm.ResNet`` & co.), it builds as before.

A config without ``plugins`` builds exactly as without snl_mm; ``probe_shape`` beside ``plugins`` sets the check's
input. A model holding a backbone whose blocks count clips at run time (TSN's) records them from its input.
"""
import functools
from typing import Callable, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import Registry

from snl_mm.utils import accepts_argument, argument_default
from .entries import PluginEntries, check_native, native_form
from .insert import add_plugins, outer_captures
from .sites import native_positions


def _resolve(cfg: dict, registry: Registry) -> object:
    obj_type = cfg.get('type')
    if not isinstance(obj_type, str):
        return obj_type
    with registry.switch_scope_and_registry(cfg.get('_scope_')) as scoped:
        return scoped.get(obj_type)


def _split(cls: type, cfg: dict) -> Tuple[dict, Optional[tuple]]:
    """``(config upstream builds, (entries, probe_shape) for add_plugins or None)``; the package's entries hold
    None in the places of the entries upstream builds itself, so that errors name the config's indices."""
    positions = native_positions(cls) if accepts_argument(cls, 'plugins') else ()
    if positions is None:  # a plugins argument of its own (the package's classes): nothing to split
        return cfg, None
    cfg = cfg.copy()
    plugins, shape = cfg.pop('plugins'), cfg.pop('probe_shape', None)
    if plugins is None:
        return cfg, None
    own = [(i, e) for i, e in enumerate(plugins) if native_form(e, positions)] \
        if isinstance(plugins, (list, tuple)) else []
    if own:
        # in mmdetection's design the residual blocks of a depth that expand by 1 (BasicBlock) take no plugins
        block = getattr(cls, 'arch_settings', {}).get(cfg.get('depth'), (None, ))[0]
        check_native(own, f'{cls.__module__.split(".")[0]} {cls.__name__}', positions,
                     cfg.get('num_stages', argument_default(cls, 'num_stages')),
                     takes_plugins=getattr(block, 'expansion', 4) > 1)
        cfg['plugins'] = [e for _, e in own]
        if len(own) == len(plugins):
            return cfg, None
        plugins = [None if native_form(e, positions) else e for e in plugins]
    return cfg, (plugins, shape)


def _wrap(build_func: Callable) -> Callable:
    if getattr(build_func, '__snl_mm_patched__', False):
        return build_func

    @functools.wraps(build_func)
    def build(cfg, *args, registry: Registry, **kwargs):
        ours = None
        if isinstance(cfg, dict) and 'plugins' in cfg:
            cls = _resolve(cfg, registry)
            if isinstance(cls, type):  # a registered function (snl_mm.PluginBackbone) takes its arguments itself
                cfg, ours = _split(cls, cfg)
        module = build_func(cfg, *args, registry=registry, **kwargs)
        if ours is not None:
            add_plugins(module, *ours)
        backbone = getattr(module, 'backbone', None)
        for capture in outer_captures(backbone) if isinstance(backbone, nn.Module) else ():
            capture.install(module)
        return module

    build.__snl_mm_patched__ = True
    return build


def _registries(root: Registry):
    yield root
    for child in root._children.values():
        yield from _registries(child)


def apply(root: Registry = ROOT_MODELS) -> bool:
    """Wrap the build function of ``root`` and of all its descendants (children registered later inherit the
    root's). Idempotent; returns True (the wrapper is in place)."""
    for registry in _registries(root):
        registry.build_func = _wrap(registry.build_func)
    return True


def is_applied(registry: Registry = ROOT_MODELS) -> bool:
    return getattr(registry.build_func, '__snl_mm_patched__', False)


def plugin_class(upstream: type, module: str, summary: str) -> type:
    """``upstream`` with a ``plugins=`` argument (and ``probe_shape=``), as a class of module ``module``: a thin
    subclass whose ``__init__`` takes every upstream argument unchanged, then calls
    :func:`~snl_mm.plugins.insert.add_plugins`. Assign it to a module-level name of ``module`` (so it pickles)."""

    def __init__(self, *args, plugins: PluginEntries = None, probe_shape: Optional[Sequence[int]] = None,
                 **kwargs) -> None:
        upstream.__init__(self, *args, **kwargs)
        self.plugins = plugins
        add_plugins(self, plugins, probe_shape)

    doc = (f'{summary}\n\n    A thin alias: ``{upstream.__module__}.{upstream.__name__}`` with ``plugins=``, the '
           'same as that class with ``plugins`` in a config.\n\n    Args:\n        *args, **kwargs: the arguments of '
           f'``{upstream.__name__}``.\n        plugins (list[dict], optional): plugin entries '
           '(:mod:`snl_mm.plugins.entries`). Default: None (the plain backbone).\n        probe_shape (tuple, '
           'optional): input shape of the build-time check.\n')
    return type(upstream.__name__, (upstream, ),
                dict(__init__=__init__, __doc__=doc, __module__=module, __qualname__=upstream.__name__))
