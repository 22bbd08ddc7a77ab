"""mmdetection's and mmsegmentation's ResNets: their own ``plugins=``, checked before they are built.

Both toolboxes build ResNets whose bottlenecks apply plugin layers themselves (mmdet's ``ResLayer`` machinery):
an entry is ``dict(cfg=..., position=..., stages=...)`` with ``position`` one of ``'after_conv1'``,
``'after_conv2'``, ``'after_conv3'`` (no ``after_block``, no block indices: every block of a chosen stage gets
one), and the 18/34-layer ``BasicBlock`` takes none. Upstream answers a wrong entry with a bare
``AssertionError`` or ``KeyError: 'Cannot find None in registry'``; :func:`check_native_entries` answers with one
error naming ``plugins[i]``, the field and the valid choices, and then lets upstream build.

The adapter also declares the positions of their bottlenecks, so ``snl_mm.PluginBackbone`` and stage addressing
work on these backbones too.
"""
import importlib
from typing import Dict, List

import torch.nn as nn

from snl_mm.plugins import Site, check_position, register_native, register_sites, resolve_type, where
from snl_mm.utils import is_installed, mmseg_available

#: positions the toolboxes' own plugin mechanism offers
NATIVE_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')
NATIVE_KEYS = ('cfg', 'position', 'stages')


def check_native_entries(cls: type, cfg: dict) -> None:
    """Check the ``plugins`` of an mmdet/mmseg ResNet config against what that class accepts."""
    plugins = cfg.get('plugins')
    if plugins is None:
        return
    owner = f'{cls.__module__.split(".")[0]} {cls.__name__}'
    if not isinstance(plugins, (list, tuple)):
        raise TypeError(f'plugins of {owner} must be a list of dicts with keys {NATIVE_KEYS}, got {plugins!r}')
    depth = cfg.get('depth')
    if depth in (18, 34) and plugins:
        raise ValueError(f'{owner}(depth={depth}) takes no plugins: its BasicBlock has none (upstream); use depth '
                         ">= 50, or insert blocks after residual blocks: dict(cfg=..., after='layer3.1') in "
                         'snl_mm.PluginBackbone')
    num_stages = cfg.get('num_stages', 4)
    for index, entry in enumerate(plugins):
        if not isinstance(entry, dict) or 'cfg' not in entry:
            raise TypeError(f"{where(index)} of {owner} must be a dict with a 'cfg' (and 'position', "
                            f"'stages'), got {entry!r}")
        unknown = [k for k in entry if k not in NATIVE_KEYS]
        if unknown:
            raise ValueError(f'{where(index)}: unknown field(s) {unknown} for the plugins of {owner}; valid '
                             f'fields: {NATIVE_KEYS} (block indices and after_block need snl_mm.PluginBackbone '
                             "or a backbone without plugins of its own)")
        resolve_type(entry['cfg'], index)
        position = entry.get('position')
        if position not in NATIVE_POSITIONS:
            check_position(position, index)  # names every position snl_mm knows
            raise ValueError(f"{where(index)}: field 'position' is {position!r}, which {owner} does not offer; "
                             f'valid positions: {NATIVE_POSITIONS}')
        stages = entry.get('stages')
        if stages is not None and (not isinstance(stages, (tuple, list)) or len(stages) != num_stages
                                   or not all(isinstance(s, bool) for s in stages)):
            raise ValueError(f"{where(index)}: field 'stages' must be {num_stages} bools (one per stage of "
                             f'{owner}), got {stages!r}')


def _bottleneck_sites(block: nn.Module) -> Dict[str, Site]:
    """mmdet's ``Bottleneck``: the output of each conv's activation (conv3: its norm), and the block."""
    return {'after_conv1': Site('conv2', 'pre'), 'after_conv2': Site('conv3', 'pre'),
            'after_block': Site('', 'post')}


def _toolbox_resnets() -> List[type]:
    """The ResNet modules of the installed toolboxes that can load (mmseg needs compiled ops)."""
    modules = []
    if mmseg_available():
        modules.append('mmseg.models.backbones.resnet')
    if is_installed('mmdet'):
        try:
            importlib.import_module('mmdet.models')
        except ImportError:  # mmdet's models import compiled mmcv.ops
            pass
        else:
            modules.append('mmdet.models.backbones.resnet')
    return [importlib.import_module(m) for m in modules]


for _module in _toolbox_resnets():
    register_native(_module.ResNet)(check_native_entries)
    register_sites(_module.Bottleneck)(_bottleneck_sites)
