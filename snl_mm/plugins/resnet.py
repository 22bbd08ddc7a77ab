"""mmpretrain's ResNet family with a ``plugins=`` argument.

The classes are mmpretrain's own (``ResNet``, ``ResNetV1c``, ``ResNetV1d``, ``ResNeXt``, ``ResNet_CIFAR``),
unchanged, plus :class:`~snl_mm.plugins.PluginsMixin`: every mmpretrain checkpoint of the plain backbone
loads with only the inserted blocks' keys missing.

Positions offered by mmpretrain's residual blocks (``after_convK``: after conv K and the norm/activation that
follow it, as mmdetection's ``ResNet(plugins=...)``):

=============  ==========================  ====================================
position       ``Bottleneck`` (ResNet-50+) ``BasicBlock`` (ResNet-18/34)
=============  ==========================  ====================================
after_conv1    input of ``conv2``          input of ``conv2``
after_conv2    input of ``conv3``          input of ``drop_path`` (after norm2)
after_conv3    input of ``drop_path``      --
after_block    output of the block         output of the block
=============  ==========================  ====================================
"""
from typing import Dict

import torch.nn as nn
from mmpretrain.models.backbones.resnet import BasicBlock, Bottleneck
from mmpretrain.models.backbones.resnet import ResNet as _ResNet
from mmpretrain.models.backbones.resnet import ResNetV1c as _ResNetV1c
from mmpretrain.models.backbones.resnet import ResNetV1d as _ResNetV1d
from mmpretrain.models.backbones.resnet_cifar import ResNet_CIFAR as _ResNet_CIFAR
from mmpretrain.models.backbones.resnext import ResNeXt as _ResNeXt

from snl_mm.registry import MODELS

from .insert import PluginEntries, Site, register_sites
from .mixin import PluginsMixin


@register_sites(BasicBlock)
def basic_block_sites(block: nn.Module) -> Dict[str, Site]:
    """Positions of mmpretrain's ``BasicBlock`` (its ReLU module is shared, so hooks sit on conv2 and
    drop_path, whose inputs are the branch after ``relu(norm1(conv1))`` and after ``norm2(conv2)``)."""
    return {
        'after_conv1': Site('conv2', 'pre', block.conv2.in_channels),
        'after_conv2': Site('drop_path', 'pre', block.conv2.out_channels),
        'after_block': Site('', 'post', block.conv2.out_channels),
    }


@register_sites(Bottleneck)
def bottleneck_sites(block: nn.Module) -> Dict[str, Site]:
    """Positions of mmpretrain's ``Bottleneck`` (also ResNeXt's, a subclass)."""
    return {
        'after_conv1': Site('conv2', 'pre', block.conv2.in_channels),
        'after_conv2': Site('conv3', 'pre', block.conv3.in_channels),
        'after_conv3': Site('drop_path', 'pre', block.conv3.out_channels),
        'after_block': Site('', 'post', block.conv3.out_channels),
    }


_PLUGINS_DOC = """

    With blocks inserted by ``plugins`` (see :func:`snl_mm.plugins.insert_plugins`)::

        plugins=[dict(cfg=dict(type='SNLBlock', reduction=2), stages=(False, False, True, False),
                      position='after_block', blocks=(-2,))]

    Args:
        *args, **kwargs: the arguments of mmpretrain's ``{name}``.
        plugins (list[dict], optional): plugin entries: ``cfg`` (block config, no ``in_channels``),
            ``stages`` (one bool per stage), ``position`` (``'after_block'``, ``'after_conv1'``,
            ``'after_conv2'``, ``'after_conv3'``), ``blocks`` (indices within each chosen stage, or one tuple
            per stage). Default: None (the plain backbone).
"""


@MODELS.register_module()
class ResNet(PluginsMixin, _ResNet):
    __doc__ = 'mmpretrain ``ResNet`` with a ``plugins=`` argument.' + _PLUGINS_DOC.format(name='ResNet')

    def __init__(self, *args, plugins: PluginEntries = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.insert_plugins(plugins)


@MODELS.register_module()
class ResNetV1c(PluginsMixin, _ResNetV1c):
    __doc__ = 'mmpretrain ``ResNetV1c`` (deep stem) with a ``plugins=`` argument.' + _PLUGINS_DOC.format(
        name='ResNetV1c')

    def __init__(self, *args, plugins: PluginEntries = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.insert_plugins(plugins)


@MODELS.register_module()
class ResNetV1d(PluginsMixin, _ResNetV1d):
    __doc__ = ('mmpretrain ``ResNetV1d`` (deep stem, average-pool downsampling) with a ``plugins=`` '
               'argument.' + _PLUGINS_DOC.format(name='ResNetV1d'))

    def __init__(self, *args, plugins: PluginEntries = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.insert_plugins(plugins)


@MODELS.register_module()
class ResNeXt(PluginsMixin, _ResNeXt):
    __doc__ = 'mmpretrain ``ResNeXt`` with a ``plugins=`` argument.' + _PLUGINS_DOC.format(name='ResNeXt')

    def __init__(self, *args, plugins: PluginEntries = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.insert_plugins(plugins)


@MODELS.register_module()
class ResNet_CIFAR(PluginsMixin, _ResNet_CIFAR):
    __doc__ = ('mmpretrain ``ResNet_CIFAR`` (3x3 stem, no max-pool) with a ``plugins=`` argument.' +
               _PLUGINS_DOC.format(name='ResNet_CIFAR'))

    def __init__(self, *args, plugins: PluginEntries = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.insert_plugins(plugins)
