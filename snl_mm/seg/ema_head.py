"""EMANet's decode head with the package's block: mmsegmentation's ``EMAHead`` whose EMA unit is
:class:`~snl_mm.blocks.EMABlock`.

This module imports mmsegmentation, which needs a compiled mmcv (``mmcv.ops``); ``snl_mm.seg`` imports it only when
mmsegmentation can load.
"""
from typing import Dict, List

import torch
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import Tensor

from snl_mm.blocks import EMABlock
from snl_mm.registry import MODELS

#: the upstream head's modules that :class:`EMAHead` keeps inside its block, ``ema_block``
UPSTREAM_BLOCK_KEYS = ('ema_mid_conv', 'ema_module', 'ema_out_conv')


@MODELS.register_module()
class EMAHead(BaseDecodeHead):
    """mmsegmentation's ``EMAHead`` (``type='snl_mm.EMAHead'``) with its EMA unit as an
    :class:`~snl_mm.blocks.EMABlock` (``fusion='residual_relu'``, the head's form) named ``ema_block``::

        x ─> ema_in_conv ─> ema_block ─> bottleneck ─> [concat(x, ·) ─> conv_cat] ─> conv_seg
             ema_block: relu(f + ema_out_conv(relu(ema_module(ema_mid_conv(f)))))

    The arguments, the computation (in training the bases' moving average moves as upstream) and the initialisation
    are upstream's. Checkpoint keys: upstream's, with the block's three modules under ``ema_block.``
    (``ema_block.ema_mid_conv``, ``ema_block.ema_module.bases``, ``ema_block.ema_out_conv``); an upstream
    ``EMAHead`` checkpoint's ``ema_mid_conv.*``, ``ema_module.bases`` and ``ema_out_conv.*`` are renamed so when it
    loads (a load-state-dict pre-hook), so it loads strictly and computes the same logits.

    Args:
        ema_channels (int): channels of the EMA unit.
        num_bases (int): ``K``, the bases.
        num_stages (int): EM iterations.
        concat_input (bool): concatenate the input and the unit's output before the classifier. Default: True.
        momentum (float): the bases' moving-average momentum. Default: 0.1.
        **kwargs: the arguments of ``BaseDecodeHead`` (``in_channels``, ``channels``, ``num_classes``,
            ``norm_cfg``, ...).

    Shapes:
        input: the backbone's multi-level features; the selected one ``(B, in_channels, H, W)``.
        output: logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, ema_channels: int, num_bases: int, num_stages: int, concat_input: bool = True,
                 momentum: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ema_channels = ema_channels
        self.num_bases = num_bases
        self.num_stages = num_stages
        self.concat_input = concat_input
        self.momentum = momentum
        self.ema_in_conv = ConvModule(self.in_channels, ema_channels, 3, padding=1, conv_cfg=self.conv_cfg,
                                      norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.ema_block = EMABlock(ema_channels, num_bases, num_stages, momentum, fusion='residual_relu',
                                  conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg)
        self.bottleneck = ConvModule(ema_channels, self.channels, 3, padding=1, conv_cfg=self.conv_cfg,
                                     norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        if concat_input:
            self.conv_cat = ConvModule(self.in_channels + self.channels, self.channels, kernel_size=3, padding=1,
                                       conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self._register_load_state_dict_pre_hook(self._upstream_keys)

    @staticmethod
    def _upstream_keys(state_dict: Dict[str, Tensor], prefix: str, *args) -> None:
        """Move an upstream ``EMAHead`` checkpoint's unit keys under ``ema_block.``."""
        for key in list(state_dict):
            if key.startswith(prefix) and key[len(prefix):].split('.')[0] in UPSTREAM_BLOCK_KEYS:
                state_dict[f'{prefix}ema_block.{key[len(prefix):]}'] = state_dict.pop(key)

    def init_weights(self) -> None:
        """mmsegmentation's initialisation: the head's, with ``ema_out_conv`` as its ``ConvModule`` initialises
        itself (Kaiming, norm weight 1) instead of the block's zero-initialised norm."""
        super().init_weights()
        self.ema_block.ema_out_conv.init_weights()

    def forward(self, inputs: List[Tensor]) -> Tensor:
        """Logits ``(B, num_classes, H, W)``."""
        x = self._transform_inputs(inputs)
        output = self.bottleneck(self.ema_block(self.ema_in_conv(x)))
        if self.concat_input:
            output = self.conv_cat(torch.cat([x, output], dim=1))
        return self.cls_seg(output)
