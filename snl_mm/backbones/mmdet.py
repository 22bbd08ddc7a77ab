"""mmdetection's and mmsegmentation's ResNets: their own ``plugins=``, and the package's fields beside it.

Their bottlenecks apply plugin layers themselves (``dict(cfg=..., position=..., stages=...)``, ``after_conv1/2/3``
in every block of a chosen stage; none in the 18/34-layer ``BasicBlock``): such entries go to upstream untouched
(:mod:`snl_mm.plugins.build`). Entries with the package's fields are inserted at the positions declared here.
"""
import importlib
from typing import Dict

import torch.nn as nn

from snl_mm.plugins import Site, register_native, register_sites
from snl_mm.utils import is_installed, mmseg_available

#: positions the toolboxes' own plugin mechanism offers
NATIVE_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


def _bottleneck_sites(block: nn.Module) -> Dict[str, Site]:
    """mmdet's ``Bottleneck`` (and ``BasicBlock``): the output of conv1's (conv2's) activation, and the block."""
    sites = {'after_conv1': Site('conv2', 'pre'), 'after_block': Site('', 'post')}
    return dict(sites, after_conv2=Site('conv3', 'pre')) if hasattr(block, 'conv3') else sites


def _toolbox_resnets() -> list:
    """The ResNet modules of the installed toolboxes that can load (both need compiled mmcv ops)."""
    modules = ['mmseg.models.backbones.resnet'] if mmseg_available() else []
    if is_installed('mmdet'):
        try:
            importlib.import_module('mmdet.models')
        except ImportError:  # mmdet's models import compiled mmcv.ops
            pass
        else:
            modules.append('mmdet.models.backbones.resnet')
    return [importlib.import_module(m) for m in modules]


for _module in _toolbox_resnets():
    register_native(_module.ResNet, positions=NATIVE_POSITIONS)
    register_sites(_module.Bottleneck, _module.BasicBlock)(_bottleneck_sites)
