"""Backbone adapters: what snl-mm knows about each toolbox's backbones, and the backbones it registers.

Each adapter imports its toolbox and is imported only when that toolbox is installed:

================  ==============  ===================================================================
module            needs           gives
================  ==============  ===================================================================
:mod:`.preresnet` (core)          ``snl_mm.PreResNet`` (the paper's CIFAR backbone)
:mod:`.pooling`   (core)          ``snl_mm.GlobalAveragePoolingDropout`` (the reference code's classifier neck)
:mod:`.wrapper`   (core)          ``snl_mm.PluginBackbone`` (blocks in any registered backbone)
:mod:`.mmpretrain` mmpretrain     ``snl_mm.ResNet`` & co.; positions, ViT and Swin layouts
:mod:`.mmaction`  mmaction2       ``snl_mm.ResNet3d``; positions, video layouts, TimeSformer, SlowFast
:mod:`.mmseg`     mmsegmentation  SegFormer's token layout; UNet's unimplemented ``plugins``
:mod:`.mmdet`     mmdet / mmseg   their ResNets' own ``plugins=`` beside the package's fields
================  ==============  ===================================================================

A registered name whose toolbox is missing still resolves: building it raises one ImportError naming the extra
to install (``pip install 'snl-mm[video]'`` for ``snl_mm.ResNet3d``).
"""
import importlib
from typing import Any, Dict, List

from snl_mm.registry import MODELS
from snl_mm.utils import install_hint, is_usable, require
from .pooling import GlobalAveragePoolingDropout
from .preresnet import PreActBasicBlock, PreActBottleneck, PreResNet
from .wrapper import PluginBackbone

#: adapter module -> (import package it needs, registered names it provides)
ADAPTERS: Dict[str, tuple] = {
    'mmpretrain': ('mmpretrain', ('ResNet', 'ResNetV1c', 'ResNetV1d', 'ResNeXt', 'ResNet_CIFAR')),
    'mmaction': ('mmaction', ('ResNet3d', )),
    'mmseg': ('mmseg', ()),
    'mmdet': (None, ()),
}

#: the adapters imported in this process
LOADED: List[str] = []


def _missing(name: str, package: str):

    def build(*args, **kwargs):
        require(package, f'snl_mm.{name}')

    build.__name__ = name
    build.__doc__ = f'``snl_mm.{name}`` needs {package}: {install_hint(package)}.'
    return build


for _adapter, (_package, _names) in ADAPTERS.items():
    if _package is None or is_usable(_package):
        importlib.import_module(f'{__name__}.{_adapter}')
        LOADED.append(_adapter)
    else:
        for _name in _names:
            MODELS.register_module(name=_name, module=_missing(_name, _package))


def __getattr__(name: str) -> Any:
    for adapter, (package, names) in ADAPTERS.items():
        if name in names:
            if adapter in LOADED:
                return getattr(importlib.import_module(f'{__name__}.{adapter}'), name)
            require(package, f'snl_mm.backbones.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['PreResNet', 'PreActBasicBlock', 'PreActBottleneck', 'PluginBackbone', 'GlobalAveragePoolingDropout',
           'ADAPTERS', 'LOADED']
