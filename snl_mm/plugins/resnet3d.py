"""mmaction2's ``ResNet3d`` (the I3D backbone) with a ``plugins=`` argument.

The class is mmaction2's own plus :class:`~snl_mm.plugins.PluginsMixin`; its ``non_local`` /
``non_local_cfg`` options keep working (an ``after_block`` block runs after the residual block's own
``non_local_block``), and 2D-inflated (``pretrained2d``) and 3D checkpoints load as before, the inserted
blocks being reset to the identity afterwards.

mmaction2's residual blocks wrap each convolution with its norm and activation in a ``ConvModule``, so
``after_convK`` is the output of ``convK`` (after the norm and, for K < last, the ReLU), as mmdetection's
``ResNet(plugins=...)``. mmaction2's alternating non-local placement of the I3D paper,
``non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0))``, reads::

    plugins=[dict(cfg=dict(type='SNLBlock'), position='after_block',
                  stages=(False, True, True, False), blocks=((), (1, 3), (1, 3, 5), ()))]
"""
from typing import Dict

import torch.nn as nn
from mmaction.models.backbones.resnet3d import BasicBlock3d, Bottleneck3d
from mmaction.models.backbones.resnet3d import ResNet3d as _ResNet3d

from snl_mm.registry import MODELS

from .insert import PluginEntries, Site, register_sites
from .mixin import PluginsMixin


@register_sites(BasicBlock3d)
def basic_block3d_sites(block: nn.Module) -> Dict[str, Site]:
    """Positions of mmaction2's ``BasicBlock3d``."""
    return {
        'after_conv1': Site('conv1', 'post', block.conv1.out_channels),
        'after_conv2': Site('conv2', 'post', block.conv2.out_channels),
        'after_block': Site('', 'post', block.conv2.out_channels),
    }


@register_sites(Bottleneck3d)
def bottleneck3d_sites(block: nn.Module) -> Dict[str, Site]:
    """Positions of mmaction2's ``Bottleneck3d``."""
    return {
        'after_conv1': Site('conv1', 'post', block.conv1.out_channels),
        'after_conv2': Site('conv2', 'post', block.conv2.out_channels),
        'after_conv3': Site('conv3', 'post', block.conv3.out_channels),
        'after_block': Site('', 'post', block.conv3.out_channels),
    }


@MODELS.register_module()
class ResNet3d(PluginsMixin, _ResNet3d):
    """mmaction2 ``ResNet3d`` with a ``plugins=`` argument.

    Args:
        *args, **kwargs: the arguments of mmaction2's ``ResNet3d`` (``non_local`` included).
        plugins (list[dict], optional): plugin entries: ``cfg`` (block config, no ``in_channels``),
            ``stages`` (one bool per stage), ``position`` (``'after_block'``, ``'after_conv1'``,
            ``'after_conv2'``, ``'after_conv3'``), ``blocks`` (indices within each chosen stage, or one tuple
            per stage). Default: None (the plain backbone).
    """

    def __init__(self, *args, plugins: PluginEntries = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.insert_plugins(plugins)
