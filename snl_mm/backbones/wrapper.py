"""``PluginBackbone``: blocks after named submodules of any registered backbone, by wrapping its config::

    backbone=dict(type='snl_mm.PluginBackbone', backbone=dict(type='mmpretrain.VGG', depth=16, out_indices=(5, )),
                  plugins=[dict(cfg=dict(type='SNLBlock'), after='features.22')])

A thin alias: the same as ``plugins`` in the wrapped backbone's own config, with ``after=`` addressing by default.
"""
from typing import List, Optional, Sequence, Union

import torch.nn as nn

from snl_mm.plugins import PluginEntries, add_plugins
from snl_mm.registry import MODELS, ROOT_MODELS


@MODELS.register_module()
def PluginBackbone(backbone: dict, plugins: PluginEntries, probe_shape: Optional[Sequence[int]] = None,
                   init_cfg: Union[dict, List[dict], None] = None) -> nn.Module:
    """Any registered backbone with blocks inserted after named submodules: builds ``backbone`` and inserts
    ``plugins`` into it (:func:`~snl_mm.plugins.add_plugins`).

    Args:
        backbone (dict): config of the backbone, built with mmengine's root ``MODELS`` in the current default scope
            (``'VGG'`` inside an mmpretrain config, ``'mmpretrain.VGG'`` anywhere).
        plugins (list[dict]): entries ``dict(cfg=dict(type=..., ...), after='path')``: the output of the submodule
            ``path`` of the backbone (a path of its ``named_modules()``) goes through the block; ``in_channels``
            comes from that submodule. Several entries may name the same path (set ``cfg['postfix']`` for a second
            block of the same type there). Stage addressing works too (``stages=..., blocks=...``).
        probe_shape (tuple, optional): input shape of the build-time check.
        init_cfg (dict | list, optional): applied after the backbone's own initialisation (a ``Pretrained``
            checkpoint with the plain backbone's keys, or with the blocks' too, which then keep its weights).

    Returns:
        nn.Module: the backbone itself, with its class, ``forward``, ``train`` and keys (a checkpoint of the plain
        backbone loads with only the blocks' keys missing; a block after a residual block has the key of an
        ``after_block`` entry there, ``layer3.4.snl_block.*``) and ``plugin_paths``.
    """
    if not isinstance(backbone, dict) or 'type' not in backbone:
        raise TypeError(f"PluginBackbone: backbone must be a config dict with a 'type', got {backbone!r}")
    if not isinstance(plugins, (list, tuple)) or not plugins:
        raise TypeError("PluginBackbone: plugins must be a non-empty list of plugin entries, e.g. "
                        f"[dict(cfg=dict(type='SNLBlock'), after='layer3.4')], got {plugins!r}")
    model = ROOT_MODELS.build(backbone)
    add_plugins(model, plugins, probe_shape, default='after', init_cfg=init_cfg)
    return model
