"""A decode head for mmsegmentation with any nonlocal block between its two convolutions.

``NonlocalHead`` is mmsegmentation's ``NLHead`` with the block given by config::

    x ──> convs[0] ──> block ──> convs[1] ──> concat(x, ·) ──> conv_cat ──> cls_seg

so ``NLHead`` itself is ``block=dict(type='NLBlock')`` and the official SNL head of the spectral paper
(channels 512, one SNL unit with ``reduction=2`` and ReLU after its norm) is ``block=dict(type='SNLBlock')``.
The block is built with ``in_channels = channels`` and is kept under the name ``nl_block``: with
``block=dict(type='NLBlock')`` (whose keys are those of mmcv's ``NonLocal2d``) a checkpoint of
mmsegmentation's ``NLHead`` loads unchanged. mmsegmentation's ``GCHead`` and ``DNLHead`` have the same structure
with their block under another name: ``block=dict(type='GCBlock'), block_name='gc_block'`` and
``block=dict(type='DNLBlock'), block_name='dnl_block'`` load their checkpoints unchanged.

This module imports mmsegmentation, which needs a compiled mmcv (``mmcv.ops``); ``snl_mm.seg`` imports it
only when mmsegmentation can load.
"""
import inspect
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from mmseg.models.decode_heads.fcn_head import FCNHead
from torch import Tensor

from snl_mm.blocks import BLOCK_NAMES
from snl_mm.registry import MODELS, ROOT_MODELS
from snl_mm.utils import argument_default

#: norm types that a block's default batch norm may be replaced by (the head's own ``norm_cfg``).
_BATCH_NORMS = ('BN', 'BN1d', 'BN2d', 'BN3d', 'SyncBN', 'MMSyncBN', 'NaiveSyncBN')


def _block_class(block_type: Any) -> type:
    """The class a block config's ``type`` names (a class is returned as it is)."""
    if inspect.isclass(block_type):
        return block_type
    # resolve as ``build`` does: in the current default scope (mmseg in its configs), then the root
    with ROOT_MODELS.switch_scope_and_registry(None) as registry:
        cls = registry.get(block_type)
    if cls is None:
        raise KeyError(f'NonlocalHead: block type {block_type!r} is not registered; the nonlocal blocks '
                       f'are {BLOCK_NAMES} (any module of the model registry taking in_channels works)')
    return cls


def build_head_block(block: Dict, channels: int, norm_cfg: Optional[Dict],
                     conv_cfg: Optional[Dict]) -> nn.Module:
    """Build the head's block from its config.

    Args:
        block (dict): block config with a ``type`` (``'SNLBlock'``, ...) and the block's own arguments.
        channels (int): the head's ``channels``, the block's ``in_channels``.
        norm_cfg (dict, optional): the head's norm. It replaces the block's default norm when that is a
            batch norm and the block config does not set ``norm_cfg`` (as ``NLHead`` passes its norm to
            ``NonLocal2d``); a block whose own norm is not a batch norm (CGNL's GroupNorm) keeps it.
        conv_cfg (dict, optional): the head's conv config, passed on when set and the block takes one.

    Returns:
        nn.Module: the block, mapping ``(B, channels, H, W)`` to the same shape.
    """
    if not isinstance(block, dict):
        raise TypeError(f'NonlocalHead: block must be a config dict such as dict(type="SNLBlock"), got '
                        f'{type(block).__name__}')
    if 'type' not in block:
        raise KeyError(f'NonlocalHead: block config {block!r} has no "type"; e.g. dict(type="SNLBlock")')
    cfg = dict(block)
    if cfg.setdefault('in_channels', channels) != channels:
        raise ValueError(f'NonlocalHead: block in_channels={cfg["in_channels"]} differs from the head\'s '
                         f'channels={channels}; leave it out (the head fills it)')
    cls = _block_class(cfg['type'])
    if norm_cfg is not None and 'norm_cfg' not in cfg:
        default = argument_default(cls, 'norm_cfg')
        if isinstance(default, dict) and default.get('type') in _BATCH_NORMS:
            cfg['norm_cfg'] = dict(norm_cfg)
    if conv_cfg is not None and 'conv_cfg' not in cfg \
            and argument_default(cls, 'conv_cfg') is not inspect.Parameter.empty:
        cfg['conv_cfg'] = dict(conv_cfg)
    cfg['type'] = cls
    return ROOT_MODELS.build(cfg)


@MODELS.register_module()
class NonlocalHead(FCNHead):
    """FCN head with a nonlocal block after its first convolution (mmsegmentation's ``NLHead``, any block).

    Args:
        block (dict): config of the block, e.g. ``dict(type='SNLBlock', reduction=2)``; its
            ``in_channels`` is the head's ``channels``. Any of ``NLBlock``, ``NSBlock``, ``A2Block``,
            ``CGNLBlock``, ``CCBlock``, ``SNLBlock`` and the family (``GCBlock``, ``DNLBlock``, ...).
        num_convs (int): convolutions of the head, at least 1; the block follows the first. Default: 2
            (as ``NLHead``).
        block_name (str): the block's attribute, the prefix of its checkpoint keys: ``'nl_block'`` (``NLHead``'s),
            ``'gc_block'`` (``GCHead``'s), ``'dnl_block'`` (``DNLHead``'s). Default: ``'nl_block'``.
        **kwargs: the arguments of ``FCNHead`` / ``BaseDecodeHead`` (``in_channels``, ``channels``,
            ``num_classes``, ``concat_input``, ``norm_cfg``, ...).

    Shapes:
        input: the backbone's multi-level features; the selected one ``(B, in_channels, H, W)``.
        output: logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, block: Dict, num_convs: int = 2, block_name: str = 'nl_block', **kwargs) -> None:
        if not isinstance(num_convs, int) or isinstance(num_convs, bool) or num_convs < 1:
            raise ValueError(f'NonlocalHead: num_convs must be an integer >= 1 (the block follows the '
                             f'first conv), got {num_convs!r}')
        if not isinstance(block_name, str) or not block_name.isidentifier():
            raise ValueError(f"NonlocalHead: block_name must be an identifier such as 'nl_block', 'gc_block' or "
                             f"'dnl_block', got {block_name!r}")
        super().__init__(num_convs=num_convs, **kwargs)
        if hasattr(self, block_name):
            raise ValueError(f'NonlocalHead: block_name={block_name!r} is an attribute of the head already; use '
                             "'nl_block', 'gc_block', 'dnl_block' or another free name")
        self.block_name = block_name
        self.add_module(block_name, build_head_block(block, self.channels, self.norm_cfg, self.conv_cfg))

    def _forward_feature(self, inputs) -> Tensor:
        """Features before ``cls_seg``: ``(B, channels, H, W)``."""
        x = self._transform_inputs(inputs)
        feats = self.convs[0](x)
        feats = getattr(self, self.block_name)(feats)
        for conv in self.convs[1:]:
            feats = conv(feats)
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return feats
