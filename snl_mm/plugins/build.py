"""``plugins=`` on whatever backbone a config has, without changing its class.

A user adds blocks to the backbone of a config they already train by adding one field::

    _base_ = 'mmaction::recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py'
    custom_imports = dict(imports=['snl_mm'], allow_failed_imports=False)
    model = dict(backbone=dict(plugins=[dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False),
                                             blocks=(-2, ))]))

The class and every other argument stay upstream's. This works because ``import snl_mm`` wraps the build function
of mmengine's model registries once (the root ``MODELS`` and every child: mmpretrain's, mmaction2's, mmdet's,
mmseg's, registered now or later): when a config gives ``plugins`` to a class whose constructor has no such
argument, the class is built without it and :func:`snl_mm.plugins.insert` puts the blocks in, verified by the
build-time check. A class with a ``plugins`` argument of its own (mmdetection's and mmsegmentation's ResNet, the
package's ``snl_mm.ResNet``) builds as before; where its adapter registered a validator (:func:`register_native`),
its entries are checked first, so a wrong entry gives one error naming the field. Nothing else changes: a config
without ``plugins`` builds exactly as without snl_mm.

``probe_shape=(B, C, ...)`` next to ``plugins`` sets the input of the build-time check.
"""
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch.nn as nn
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import Registry

from snl_mm.utils import accepts_argument
from .insert import freeze_like_upstream, init_inserted, insert, keep_blocks_trainable
from .layouts import FramesLayout

#: per class with a ``plugins`` argument of its own: ``validator(cls, cfg)`` run before it is built
_NATIVE: Dict[type, Callable[[type, dict], None]] = {}
#: classes with a ``plugins`` argument that upstream does not implement (it refuses anything but None)
_UNIMPLEMENTED: List[type] = []


def register_plugins_not_implemented(*classes: type) -> None:
    """Declare classes whose ``plugins`` argument upstream refuses (mmseg's UNet asserts it is None): a config's
    ``plugins`` there is handled by snl_mm as for classes without the argument."""
    _UNIMPLEMENTED.extend(classes)


def plugins_not_implemented(cls: type) -> bool:
    return any(issubclass(cls, c) for c in _UNIMPLEMENTED)


def register_native(*classes: type) -> Callable:
    """``@register_native(*classes)``: ``validator(cls, cfg)`` checks the ``plugins`` entries of a backbone class
    that has a ``plugins`` argument of its own, before upstream builds it (subclasses included)."""

    def decorator(validator: Callable[[type, dict], None]) -> Callable[[type, dict], None]:
        for cls in classes:
            _NATIVE[cls] = validator
        return validator

    return decorator


class InitWithPlugins:
    """``init_weights`` of a backbone that got blocks from the config: the class's own, then the blocks back to
    the identity (:func:`~snl_mm.plugins.insert.init_inserted`). Stored on the instance; a callable object, so a
    deep copy calls its own backbone's."""

    def __init__(self, module: nn.Module, paths: Sequence[str]) -> None:
        self.module = module
        self.paths = list(paths)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        upstream = type(self.module).init_weights.__get__(self.module)
        init_inserted(self.module, self.paths, lambda: upstream(*args, **kwargs))


class TrainWithPlugins:
    """``train`` of a backbone that got blocks from the config: the class's own, then
    :func:`~snl_mm.plugins.insert.keep_blocks_trainable` (an upstream norm freezing must not freeze a block)."""

    def __init__(self, module: nn.Module, paths: Sequence[str]) -> None:
        self.module = module
        self.paths = list(paths)

    def __call__(self, mode: bool = True) -> nn.Module:
        type(self.module).train(self.module, mode)
        keep_blocks_trainable(self.module, self.paths)
        return self.module


def add_plugins(module: nn.Module, plugins: Sequence[dict], probe_shape: Optional[Sequence[int]] = None) -> None:
    """Insert ``plugins`` into an already built backbone of any class (what a config's ``plugins`` does).

    The instance gets ``plugin_paths`` (the inserted blocks' module paths), an ``init_weights`` that keeps the
    blocks at the identity after the class's own initialisation, and a ``train`` that keeps them trainable.
    """
    paths = insert(module, plugins, probe_shape)
    module.plugin_paths = paths
    if not paths:
        return
    if hasattr(type(module), 'init_weights'):
        module.init_weights = InitWithPlugins(module, paths)
    module.train = TrainWithPlugins(module, paths)
    freeze_like_upstream(module)


def _resolve(cfg: dict, registry: Registry) -> Optional[type]:
    obj_type = cfg.get('type')
    if not isinstance(obj_type, str):
        return obj_type if isinstance(obj_type, type) else None
    with registry.switch_scope_and_registry(cfg.get('_scope_')) as scoped:
        return scoped.get(obj_type)


class SegmentRecorder:
    """Forward pre-hook of a video recogniser: records ``T`` of its input ``(N, T, C, H, W)`` for the frames
    layouts of its backbone's blocks whose ``T`` is the recogniser's (TSN-style 2-D backbones)."""

    def __init__(self, layouts: Sequence[FramesLayout]) -> None:
        self.layouts = list(layouts)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = args[0] if args else kwargs.get('inputs')
        if hasattr(inputs, 'dim') and inputs.dim() == 5:
            for layout in self.layouts:
                layout.recorded = int(inputs.shape[1])


def _runtime_frames(module: nn.Module):
    backbone = getattr(module, 'backbone', None)
    return list(getattr(backbone, '_snl_mm_runtime_frames', ())) if isinstance(backbone, nn.Module) else []


def _wrap(build_func: Callable) -> Callable:
    if getattr(build_func, '__snl_mm_plugins__', False):
        return build_func

    @functools.wraps(build_func)
    def build(cfg, *args, registry: Registry, **kwargs):
        if isinstance(cfg, dict) and 'plugins' in cfg:
            cls = _resolve(cfg, registry)
            if cls is not None and (not accepts_argument(cls, 'plugins') or plugins_not_implemented(cls)):
                cfg = type(cfg)(cfg) if not hasattr(cfg, 'copy') else cfg.copy()
                plugins, shape = cfg.pop('plugins'), cfg.pop('probe_shape', None)
                module = build_func(cfg, *args, registry=registry, **kwargs)
                if plugins is not None:
                    add_plugins(module, plugins, shape)
                return module
            validator = next((v for c, v in _NATIVE.items() if cls is not None and issubclass(cls, c)), None)
            if validator is not None:
                validator(cls, cfg)
        module = build_func(cfg, *args, registry=registry, **kwargs)
        layouts = _runtime_frames(module) if isinstance(module, nn.Module) else []
        if layouts:
            module.register_forward_pre_hook(SegmentRecorder(layouts), with_kwargs=True)
        return module

    build.__snl_mm_plugins__ = True
    return build


def _registries(root: Registry):
    yield root
    for child in root._children.values():
        yield from _registries(child)


def enable(root: Registry = ROOT_MODELS) -> None:
    """Wrap the build function of ``root`` and of all its descendants (children registered later inherit the
    root's). Idempotent."""
    for registry in _registries(root):
        registry.build_func = _wrap(registry.build_func)


def is_enabled(registry: Registry = ROOT_MODELS) -> bool:
    return getattr(registry.build_func, '__snl_mm_plugins__', False)
