"""ANN's decode head with the package's blocks: mmsegmentation's ``ANNHead`` whose fusion and context blocks are
:class:`~snl_mm.blocks.AFNBBlock` and :class:`~snl_mm.blocks.APNBBlock` in mmsegmentation's concat form.

This module imports mmsegmentation, which needs a compiled mmcv (``mmcv.ops``); ``snl_mm.seg`` imports it only when
mmsegmentation can load.
"""
from typing import Sequence

from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import Tensor

from snl_mm.blocks import AFNBBlock, APNBBlock
from snl_mm.graph import POOL_SCALES
from snl_mm.registry import MODELS


@MODELS.register_module()
class ANNHead(BaseDecodeHead):
    """mmsegmentation's ``ANNHead`` (``type='snl_mm.ANNHead'``) built from the package's blocks::

        low, high ─> fusion (AFNB: queries from high, keys and values from low) ─> dropout ─> bottleneck (3x3)
                  ─> context (APNB) ─> cls_seg

    ``fusion`` is ``AFNBBlock(high, inner_channels=project_channels, context_channels=low, fusion='concat')`` and
    ``context`` is ``APNBBlock(channels, inner_channels=project_channels, fusion='concat')``, both with the head's
    ``conv_cfg``, ``norm_cfg`` and ``act_cfg``; each attends to its 110 pyramid-pooled anchors in ``O(N S)`` memory.
    The arguments, the outputs and the checkpoint keys are upstream's (``fusion.stages.0.*``,
    ``fusion.bottleneck``, ``bottleneck``, ``context.stages.0.*``, ``context.bottleneck``, ``conv_seg``): an
    ``ANNHead`` checkpoint loads strictly and computes the same logits.

    Args:
        project_channels (int): query/key/value channels of both blocks.
        query_scales (sequence[int]): one attention stage per entry; only 1 is defined (mmsegmentation's query
            scales > 1 fail in its forward). Default: ``(1,)``.
        key_pool_scales (sequence[int]): the pyramid pooling scales of keys and values. Default: ``(1, 3, 6, 8)``.
        **kwargs: the arguments of ``BaseDecodeHead``; ``in_channels`` and ``in_index`` select the low-level and the
            high-level map (``input_transform='multiple_select'``, as upstream).

    Shapes:
        input: the backbone's multi-level features; the selected ``(B, C_low, H, W)`` and ``(B, C_high, H', W')``.
        output: logits ``(B, num_classes, H', W')``.
    """

    def __init__(self,
                 project_channels: int,
                 query_scales: Sequence[int] = (1, ),
                 key_pool_scales: Sequence[int] = POOL_SCALES,
                 **kwargs) -> None:
        super().__init__(input_transform='multiple_select', **kwargs)
        if len(self.in_channels) != 2:
            raise ValueError(f'ANNHead: in_channels must give the low-level and the high-level map, two entries, got '
                             f'{self.in_channels!r}')
        low_channels, high_channels = self.in_channels
        self.project_channels = project_channels
        blocks = dict(inner_channels=project_channels, pool_scales=key_pool_scales, query_scales=query_scales,
                      fusion='concat', conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.fusion = AFNBBlock(high_channels, context_channels=low_channels, **blocks)
        self.bottleneck = ConvModule(high_channels, self.channels, 3, padding=1, conv_cfg=self.conv_cfg,
                                     norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.context = APNBBlock(self.channels, **blocks)

    def forward(self, inputs) -> Tensor:
        """Logits ``(B, num_classes, H', W')`` of the selected low- and high-level maps."""
        low_feats, high_feats = self._transform_inputs(inputs)
        output = self.fusion(high_feats, low_feats)
        output = self.dropout(output)
        output = self.bottleneck(output)
        output = self.context(output)
        return self.cls_seg(output)
