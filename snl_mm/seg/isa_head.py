"""ISANet's decode head with the package's block: mmsegmentation's ``ISAHead`` whose interlaced sparse
self-attention is :class:`~snl_mm.blocks.ISABlock` in mmsegmentation's concat form.

This module imports mmsegmentation, which needs a compiled mmcv (``mmcv.ops``); ``snl_mm.seg`` imports it only when
mmsegmentation can load.
"""
from typing import Sequence, Union

from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import Tensor

from snl_mm.blocks import ISABlock
from snl_mm.registry import MODELS

#: the modules of mmsegmentation's ``ISAHead`` that are the block's (their keys gain the prefix ``isa_block.``)
UPSTREAM_BLOCK_KEYS = ('global_relation.', 'local_relation.', 'out_conv.')


@MODELS.register_module()
class ISAHead(BaseDecodeHead):
    """mmsegmentation's ``ISAHead`` (``type='snl_mm.ISAHead'``) built from the package's block::

        x ─> in_conv (3x3) ─> isa_block (long-range, then short-range relation; out_conv(cat(., x))) ─> cls_seg

    ``isa_block`` is ``ISABlock(channels, inner_channels=isa_channels, down_factor=down_factor, fusion='concat')``
    with the head's ``conv_cfg``, ``norm_cfg`` and ``act_cfg``: any ``H, W`` (padded to whole cells as upstream),
    attention as fused attention on the batch of groups.

    Checkpoint keys: ``in_conv``, ``isa_block.global_relation``, ``isa_block.local_relation``, ``isa_block.out_conv``,
    ``conv_seg``. An ``ISAHead`` checkpoint of mmsegmentation (``global_relation.*``, ``local_relation.*``,
    ``out_conv.*`` at the head's level) loads strictly: a load-state-dict pre-hook moves those keys under
    ``isa_block.`` (:data:`UPSTREAM_BLOCK_KEYS`); the logits are upstream's.

    Args:
        isa_channels (int): query/key channels of both relations.
        down_factor (int | sequence[int]): the cell size per axis. Default: ``(8, 8)``.
        **kwargs: the arguments of ``BaseDecodeHead`` (``in_channels``, ``channels``, ``num_classes``, ``norm_cfg``...).

    Shapes:
        input: the backbone's multi-level features; the selected one ``(B, in_channels, H, W)``.
        output: logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, isa_channels: int, down_factor: Union[int, Sequence[int]] = (8, 8), **kwargs) -> None:
        super().__init__(**kwargs)
        self.down_factor = down_factor
        self.in_conv = ConvModule(self.in_channels, self.channels, 3, padding=1, conv_cfg=self.conv_cfg,
                                  norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.isa_block = ISABlock(self.channels, inner_channels=isa_channels, down_factor=down_factor, fusion='concat',
                                  conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self._register_load_state_dict_pre_hook(self._upstream_keys)

    @staticmethod
    def _upstream_keys(state_dict, prefix, *args) -> None:
        """Move the keys of an mmsegmentation ``ISAHead`` checkpoint's relations and ``out_conv`` under
        ``isa_block.``."""
        for key in list(state_dict):
            name = key[len(prefix):]
            if key.startswith(prefix) and name.startswith(UPSTREAM_BLOCK_KEYS):
                state_dict[f'{prefix}isa_block.{name}'] = state_dict.pop(key)

    def forward(self, inputs) -> Tensor:
        """Logits ``(B, num_classes, H, W)`` of the selected map."""
        x = self.in_conv(self._transform_inputs(inputs))
        return self.cls_seg(self.isa_block(x))
