"""The insertion mechanism: plugin entries, sites and layouts, the build-time check, ``plugins=`` on any backbone.

It knows no backbone by name: what it needs to know about one (the positions of its residual blocks, its stages,
the layout of its data, the input of the check) the backbone adapters of :mod:`snl_mm.backbones` declare with
:func:`register_sites`, :func:`register_stages`, :func:`register_layout`, :func:`register_probe`,
:func:`register_replaceable` and :func:`register_native`. ``docs/plugins.md`` is the user guide.
"""
from . import build
from .build import add_plugins, register_native
from .entries import (ADDRESSINGS, AFTER_ENTRY_KEYS, ENTRY_KEYS, POSITIONS, PluginEntries, UnknownPluginError,
                      check_position, resolve_type, where)
from .insert import Placement, init_inserted, insert, plan, register_replaceable
from .layouts import Capture, FramesLayout, Layout, MapLayout, TokensLayout, layout_from_config
from .mixin import PluginsMixin
from .sites import (BlockCall, BlockHook, Replacement, Site, block_sites, register_layout, register_probe,
                    register_sites, register_stages, residual_stages)

# config `plugins=` on every backbone class: wrap the model registries' build function once
build.enable()

__all__ = [
    'POSITIONS', 'ENTRY_KEYS', 'AFTER_ENTRY_KEYS', 'ADDRESSINGS', 'PluginEntries', 'UnknownPluginError',
    'check_position', 'resolve_type', 'where', 'Placement', 'insert', 'plan', 'init_inserted',
    'register_replaceable', 'add_plugins', 'register_native', 'Capture', 'Layout', 'MapLayout', 'FramesLayout',
    'TokensLayout', 'layout_from_config', 'PluginsMixin', 'Site', 'BlockCall', 'BlockHook', 'Replacement',
    'block_sites', 'register_sites', 'register_stages', 'register_layout', 'register_probe', 'residual_stages'
]
