"""Putting blocks into backbones: the insertion mechanism and the backbones built on it.

``snl_mm.ResNet`` (also ``ResNetV1c``, ``ResNetV1d``, ``ResNeXt``, ``ResNet_CIFAR``: mmpretrain's),
``snl_mm.PreResNet`` (pre-activation ResNet for CIFAR), ``snl_mm.ResNet3d`` (mmaction2's I3D backbone) and
``snl_mm.PluginBackbone`` (any registered backbone, blocks after named submodules), all in the ``snl_mm``
scope. ``docs/plugins.md`` is the user guide.
"""
from .insert import (AFTER_ENTRY_KEYS, ENTRY_KEYS, POSITIONS, Site, UnknownPluginError, attach, block_sites,
                     infer_channels, init_inserted, insert_after, insert_plugins, register_sites, residual_stages)
from .mixin import PluginsMixin
from .preresnet import PreActBasicBlock, PreActBottleneck, PreResNet
from .resnet import ResNet, ResNet_CIFAR, ResNetV1c, ResNetV1d, ResNeXt
from .resnet3d import ResNet3d
from .wrapper import PluginBackbone

__all__ = [
    'POSITIONS', 'ENTRY_KEYS', 'AFTER_ENTRY_KEYS', 'Site', 'UnknownPluginError', 'attach', 'block_sites',
    'infer_channels', 'init_inserted', 'insert_after', 'insert_plugins', 'register_sites', 'residual_stages',
    'PluginsMixin', 'ResNet', 'ResNetV1c', 'ResNetV1d', 'ResNeXt', 'ResNet_CIFAR', 'PreResNet',
    'PreActBasicBlock', 'PreActBottleneck', 'ResNet3d', 'PluginBackbone',
]
