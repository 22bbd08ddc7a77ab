"""The insertion mechanism: plugin entries, sites and layouts, the build-time check, ``plugins=`` on any backbone.

One route: :func:`add_plugins` takes a built backbone and its entries (:mod:`.insert`); the model registries
(:mod:`.build`), ``snl_mm.PluginBackbone`` and the classes with a ``plugins`` argument of their own all call it.
It knows no backbone by name: what it needs to know about one (the positions of its residual blocks, its stages,
the layout of its data, the input of the check) the backbone adapters of :mod:`snl_mm.backbones` declare with
:func:`register_sites`, :func:`register_stages`, :func:`register_layout`, :func:`register_probe`,
:func:`register_replaceable` and :func:`register_native`. ``docs/plugins.md`` is the user guide.
"""
from .build import plugin_class
from .entries import (ADDRESSINGS, AFTER_ENTRY_KEYS, ENTRY_KEYS, POSITIONS, PluginEntries, UnknownPluginError,
                      check_position, resolve_type, where)
from .insert import Placement, add_plugins, insert, plan
from .layouts import Capture, FramesLayout, Layout, MapLayout, TokensLayout, layout_from_config
from .sites import (BlockCall, Replacement, Site, block_sites, register_layout, register_native,
                    register_probe, register_replaceable, register_sites, register_stages, residual_stages)

__all__ = [
    'POSITIONS', 'ENTRY_KEYS', 'AFTER_ENTRY_KEYS', 'ADDRESSINGS', 'PluginEntries', 'UnknownPluginError',
    'check_position', 'resolve_type', 'where', 'Placement', 'insert', 'plan', 'add_plugins', 'plugin_class',
    'register_replaceable', 'register_native', 'Capture', 'Layout', 'MapLayout', 'FramesLayout', 'TokensLayout',
    'layout_from_config', 'Site', 'BlockCall', 'Replacement', 'block_sites', 'register_sites',
    'register_stages', 'register_layout', 'register_probe', 'residual_stages'
]
