"""``PluginBackbone``: blocks after named submodules of any registered backbone.

For backbones without residual stages (VGG, MobileNet, a ViT's blocks...) or for placements the stage/block
addressing cannot express::

    backbone=dict(
        type='snl_mm.PluginBackbone',
        backbone=dict(type='mmpretrain.VGG', depth=16, out_indices=(5, )),
        plugins=[dict(cfg=dict(type='SNLBlock'), after='features.22')])

The wrapper is invisible in state dicts: the wrapped backbone's keys appear without a ``backbone.`` prefix of
the wrapper, so a checkpoint of the plain backbone (``load_from``, ``init_cfg=dict(type='Pretrained')``)
loads with only the blocks' keys missing, and a block inserted after a residual block has the key an
``after_block`` plugin of :class:`~snl_mm.plugins.ResNet` has there (``layer3.4.snl_block.*``).
"""
from typing import Any, Dict, List, Optional, Sequence

import torch.nn as nn
from mmengine.model import BaseModule

from snl_mm.plugins import PluginEntries, init_inserted, insert
from snl_mm.registry import MODELS, ROOT_MODELS

_INNER = 'backbone.'


def _strip_wrapper(module: 'PluginBackbone', state_dict: Dict[str, Any], prefix: str,
                   local_metadata: dict) -> None:
    """State-dict post-hook: ``{prefix}backbone.k -> {prefix}k``, the entries' order kept."""
    inner = prefix + _INNER
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        state_dict[prefix + key[len(inner):] if key.startswith(inner) else key] = value
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        for key in [k for k in metadata if k == inner[:-1] or k.startswith(inner)]:
            metadata[prefix + key[len(inner):]] = metadata.pop(key)


def _add_wrapper(module: 'PluginBackbone', state_dict: Dict[str, Any], prefix: str, *args) -> None:
    """Load pre-hook: ``{prefix}k -> {prefix}backbone.k`` for the wrapper's own entries."""
    module._load_prefix = prefix
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + _INNER + key[len(prefix):]] = state_dict.pop(key)


def _report_plain_keys(module: 'PluginBackbone', incompatible_keys) -> None:
    """Load post-hook: report missing keys as a checkpoint names them, without the inner prefix."""
    prefix = getattr(module, '_load_prefix', None)
    if prefix is None:
        return
    inner = prefix + _INNER
    keys = incompatible_keys.missing_keys
    for i, key in enumerate(keys):
        if key.startswith(inner):
            keys[i] = prefix + key[len(inner):]
    module._load_prefix = None


@MODELS.register_module()
class PluginBackbone(BaseModule):
    """Any registered backbone with blocks inserted after named submodules.

    Args:
        backbone (dict): config of the wrapped backbone, built with mmengine's root ``MODELS`` in the current
            default scope (``'VGG'`` inside an mmpretrain config, ``'mmpretrain.VGG'`` anywhere).
        plugins (list[dict]): entries ``dict(cfg=dict(type=..., ...), after='path')``: the output of the
            submodule ``path`` of the wrapped backbone (a path of its ``named_modules()``) goes through the
            block; ``in_channels`` comes from that submodule (never from ``cfg``). Several entries may name
            the same path (set ``cfg['postfix']`` for a second block of the same type there).
        init_cfg (dict | list, optional): init config of the wrapper; a ``Pretrained`` checkpoint with the
            plain backbone's keys loads into the wrapped backbone.

    Attributes:
        backbone (nn.Module): the wrapped backbone, blocks included.
        plugin_paths (list[str]): module paths of the inserted blocks relative to :attr:`backbone`.

    ``forward`` and ``train`` are the wrapped backbone's (its ``frozen_stages`` and ``norm_eval`` apply to
    the blocks inside frozen or evaluated submodules).
    """

    def __init__(self, backbone: dict, plugins: PluginEntries, probe_shape: Optional[Sequence[int]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(backbone, dict) or 'type' not in backbone:
            raise TypeError(f"PluginBackbone: backbone must be a config dict with a 'type', got {backbone!r}")
        if not isinstance(plugins, (list, tuple)) or not plugins:
            raise TypeError("PluginBackbone: plugins must be a non-empty list of plugin entries, e.g. "
                            f"[dict(cfg=dict(type='SNLBlock'), after='layer3.4')], got {plugins!r}")
        self.backbone = ROOT_MODELS.build(backbone)
        self.plugins = plugins
        self.plugin_paths: List[str] = insert(self.backbone, plugins, probe_shape, default='after')
        self.register_state_dict_post_hook(_strip_wrapper)
        self.register_load_state_dict_pre_hook(_add_wrapper)
        self.register_load_state_dict_post_hook(_report_plain_keys)

    @property
    def plugin_blocks(self) -> Dict[str, nn.Module]:
        """``{path: block}`` of the inserted blocks."""
        return {path: self.backbone.get_submodule(path) for path in self.plugin_paths}

    def __getattr__(self, name: str) -> Any:
        # attributes a model reads from its backbone (num_segments, out_channels...) are the wrapped backbone's
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get('_modules', {}).get('backbone')
            if inner is None:
                raise
            return getattr(inner, name)

    def forward(self, *args, **kwargs):
        """The wrapped backbone's forward."""
        return self.backbone(*args, **kwargs)

    def init_weights(self) -> None:
        """The wrapped backbone's initialisation (and the wrapper's ``init_cfg``), then every inserted block
        back to the identity unless a checkpoint loaded its weights meanwhile."""
        init_inserted(self.backbone, self.plugin_paths, super().init_weights)
