"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual Networks").

The CIFAR backbone of the paper's ablations (Sec. 3.1: PreResNet-56, one block right after the second
residual block of the first stage). Each residual unit computes ``x + F(x)`` with the branch
``F = conv(act(norm(...)))`` in pre-activation order; nothing follows the addition, so the identity path is
clean from the stem to the final norm.

Layout (``depth`` names the layouts of the paper's reference code; widths 16/32/64 before expansion):

=====  ===================  ============  ===========================
depth  block                blocks/stage  output channels per stage
=====  ===================  ============  ===========================
20     ``PreActBasicBlock``  (3, 3, 3)     16, 32, 64
56     ``PreActBottleneck``  (9, 9, 9)     64, 128, 256
110    ``PreActBottleneck``  (18, 18, 18)  64, 128, 256
=====  ===================  ============  ===========================

Positions for ``plugins`` (the branch's "conv K and its norm/activation" come before conv K in
pre-activation order, so ``after_convK`` is the output of conv K):

=============  =====================  ======================
position       ``PreActBottleneck``   ``PreActBasicBlock``
=============  =====================  ======================
after_conv1    output of ``conv1``    output of ``conv1``
after_conv2    output of ``conv2``    output of ``conv2``
after_conv3    output of ``conv3``    --
after_block    output of the block    output of the block
=============  =====================  ======================
"""
from typing import Dict, Optional, Sequence, Tuple, Type

import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm
from torch import Tensor

from snl_mm.plugins import PluginEntries, PluginsMixin, Site, register_sites
from snl_mm.registry import MODELS

ConfigType = Optional[dict]


class PreActBasicBlock(BaseModule):
    """Pre-activation basic unit: ``x + conv2(act(norm2(conv1(act(norm1(x))))))``, 3x3 convolutions.

    A projection shortcut (1x1 convolution, ``downsample``) takes the pre-activated input
    ``act(norm1(x))``, as in the paper's code; an identity shortcut takes ``x``.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        stride (int): stride of ``conv1``. Default: 1.
        downsample (nn.Module, optional): projection shortcut. Default: None (identity).
        with_cp (bool): run the unit under ``torch.utils.checkpoint`` when training. Default: False.
        conv_cfg (dict, optional): convolution config. Default: None (``nn.Conv2d``).
        norm_cfg (dict): norm config. Default: ``dict(type='BN')``.
        act_cfg (dict): activation config. Default: ``dict(type='ReLU', inplace=True)``.
        init_cfg (dict, optional): mmengine init config.

    Shape: ``(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)``.
    """

    expansion = 1

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 downsample: Optional[nn.Module] = None,
                 with_cp: bool = False,
                 conv_cfg: ConfigType = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 init_cfg: ConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mid_channels = out_channels // self.expansion
        self.stride = stride
        self.with_cp = with_cp
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, in_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.conv1 = build_conv_layer(conv_cfg, in_channels, self.mid_channels, 3, stride=stride, padding=1,
                                      bias=False)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, self.mid_channels, postfix=2)
        self.add_module(self.norm2_name, norm2)
        self.conv2 = build_conv_layer(conv_cfg, self.mid_channels, out_channels, 3, padding=1, bias=False)
        self.relu = build_activation_layer(act_cfg)
        self.downsample = downsample

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    @property
    def norm2(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    def _branch(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu(self.norm2(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:

        def _inner_forward(x: Tensor) -> Tensor:
            out = self.relu(self.norm1(x))
            identity = x if self.downsample is None else self.downsample(out)
            return self._branch(out) + identity

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class PreActBottleneck(PreActBasicBlock):
    """Pre-activation bottleneck unit: norm-act-conv 1x1, norm-act-conv 3x3 (``stride``), norm-act-conv 1x1.

    ``mid_channels = out_channels // 4``. Arguments as :class:`PreActBasicBlock`.

    Shape: ``(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)``.
    """

    expansion = 4

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 downsample: Optional[nn.Module] = None,
                 with_cp: bool = False,
                 conv_cfg: ConfigType = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 init_cfg: ConfigType = None) -> None:
        BaseModule.__init__(self, init_cfg=init_cfg)
        if out_channels % self.expansion:
            raise ValueError(f'PreActBottleneck: out_channels={out_channels} must be divisible by the '
                             f'expansion {self.expansion}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mid_channels = out_channels // self.expansion
        self.stride = stride
        self.with_cp = with_cp
        mid = self.mid_channels
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, in_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.conv1 = build_conv_layer(conv_cfg, in_channels, mid, 1, bias=False)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, mid, postfix=2)
        self.add_module(self.norm2_name, norm2)
        self.conv2 = build_conv_layer(conv_cfg, mid, mid, 3, stride=stride, padding=1, bias=False)
        self.norm3_name, norm3 = build_norm_layer(norm_cfg, mid, postfix=3)
        self.add_module(self.norm3_name, norm3)
        self.conv3 = build_conv_layer(conv_cfg, mid, out_channels, 1, bias=False)
        self.relu = build_activation_layer(act_cfg)
        self.downsample = downsample

    @property
    def norm3(self) -> nn.Module:
        return getattr(self, self.norm3_name)

    def _branch(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.conv2(self.relu(self.norm2(out)))
        return self.conv3(self.relu(self.norm3(out)))


@register_sites(PreActBasicBlock)
def preact_basic_sites(block: PreActBasicBlock) -> Dict[str, Site]:
    """Positions of :class:`PreActBasicBlock`."""
    return {'after_conv1': Site('conv1', 'post'), 'after_conv2': Site('conv2', 'post'),
            'after_block': Site('', 'post')}


@register_sites(PreActBottleneck)
def preact_bottleneck_sites(block: PreActBottleneck) -> Dict[str, Site]:
    """Positions of :class:`PreActBottleneck`."""
    return {'after_conv1': Site('conv1', 'post'), 'after_conv2': Site('conv2', 'post'),
            'after_conv3': Site('conv3', 'post'), 'after_block': Site('', 'post')}


@MODELS.register_module()
class PreResNet(PluginsMixin, BaseModule):
    """Pre-activation ResNet for 32x32 inputs, an mmpretrain-style backbone (it needs only mmengine and mmcv).

    Stem: one 3x3 convolution (no norm: the first unit pre-activates it). Stages of pre-activation units,
    the first unit of a stage projecting with a 1x1 convolution when the stride or the width changes. The
    last stage's output goes through a final norm and activation, as the paper's network before pooling.
    Works in mmpretrain's ``ImageClassifier`` with ``GlobalAveragePooling`` and ``LinearClsHead``
    (``in_channels=feat_dim``: 64 for depth 20, 256 for 56 and 110).

    Args:
        depth (int): 20, 56 or 110 (see the module docstring for the layouts).
        in_channels (int): input image channels. Default: 3.
        stem_channels (int): output channels of the stem convolution. Default: 16.
        base_channels (int): width of the first stage before expansion; doubles every stage. Default: 16.
        num_stages (int): stages, 1 to 3. Default: 3.
        strides (Sequence[int]): stride of the first unit of each stage. Default: ``(1, 2, 2)``.
        out_indices (Sequence[int]): stages whose outputs are returned (negative allowed). The last stage's
            output is returned after the final norm and activation. Default: ``(2,)``.
        frozen_stages (int): stages to freeze (eval mode, no gradient): -1 none, 0 the stem, i the stem and
            stages 1..i; the final norm is frozen with the last stage. Default: -1.
        conv_cfg (dict, optional): convolution config. Default: None.
        norm_cfg (dict): norm config. Default: ``dict(type='BN', requires_grad=True)``.
        act_cfg (dict): activation config. Default: ``dict(type='ReLU', inplace=True)``.
        norm_eval (bool): keep BN layers in eval mode while training. Default: False.
        with_cp (bool): run each unit under ``torch.utils.checkpoint``. Default: False.
        plugins (list[dict], optional): blocks to insert (:mod:`snl_mm.plugins.entries`); the paper's
            ablation placement is ``dict(cfg=dict(type='SNLBlock'), stages=(True, False, False), blocks=(1,))``.
            Default: None.
        probe_shape (tuple, optional): input shape of the build-time check. Default: ``(1, in_channels, 64, 64)``.
        init_cfg (dict | list): mmengine init config. Default: Kaiming for convolutions, 1 for norms.

    Shape: ``(B, in_channels, H, W)`` -> tuple of ``(B, C_i, H / s_i, W / s_i)`` for ``i`` in ``out_indices``.
    """

    arch_settings: Dict[int, Tuple[Type[PreActBasicBlock], Tuple[int, ...]]] = {
        20: (PreActBasicBlock, (3, 3, 3)),
        56: (PreActBottleneck, (9, 9, 9)),
        110: (PreActBottleneck, (18, 18, 18)),
    }

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem_channels: int = 16,
                 base_channels: int = 16,
                 num_stages: int = 3,
                 strides: Sequence[int] = (1, 2, 2),
                 out_indices: Sequence[int] = (2, ),
                 frozen_stages: int = -1,
                 conv_cfg: ConfigType = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 plugins: PluginEntries = None,
                 probe_shape: Optional[Sequence[int]] = None,
                 init_cfg=[
                     dict(type='Kaiming', layer=['Conv2d']),
                     dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
                 ]) -> None:
        super().__init__(init_cfg)
        if depth not in self.arch_settings:
            raise KeyError(f'PreResNet: invalid depth {depth!r}; valid depths: {sorted(self.arch_settings)}')
        if not 1 <= num_stages <= 3:
            raise ValueError(f'PreResNet: num_stages must be 1, 2 or 3, got {num_stages!r}')
        if len(strides) != num_stages:
            raise ValueError(f'PreResNet: strides needs one entry per stage ({num_stages}), got {strides!r}')
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        for i in out_indices:
            if not -num_stages <= i < num_stages:
                raise ValueError(f'PreResNet: out_indices entry {i} is out of range for {num_stages} stages; '
                                 f'valid: {-num_stages}..{num_stages - 1}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'PreResNet: frozen_stages must lie in -1..{num_stages}, got {frozen_stages!r}')
        self.depth = depth
        self.stem_channels = stem_channels
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.strides = tuple(strides)
        self.out_indices = tuple(sorted(i % num_stages for i in out_indices))
        self.frozen_stages = frozen_stages
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.block, stage_blocks = self.arch_settings[depth]
        self.stage_blocks = stage_blocks[:num_stages]
        self.expansion = self.block.expansion

        self.conv1 = build_conv_layer(conv_cfg, in_channels, stem_channels, 3, padding=1, bias=False)
        self.res_layers = []
        channels = stem_channels
        for i, num_blocks in enumerate(self.stage_blocks):
            out_channels = base_channels * 2**i * self.expansion
            stage = self.make_res_layer(num_blocks, channels, out_channels, self.strides[i])
            self.add_module(f'layer{i + 1}', stage)
            self.res_layers.append(f'layer{i + 1}')
            channels = out_channels
        self.feat_dim = channels
        self.final_norm_name, final_norm = build_norm_layer(norm_cfg, channels, postfix='_final')
        self.add_module(self.final_norm_name, final_norm)
        self.relu = build_activation_layer(act_cfg)

        self.in_channels = in_channels
        self._freeze_stages()
        self.insert_plugins(plugins, probe_shape)

    @property
    def final_norm(self) -> nn.Module:
        return getattr(self, self.final_norm_name)

    def make_res_layer(self, num_blocks: int, in_channels: int, out_channels: int,
                       stride: int) -> nn.Sequential:
        """One stage: ``num_blocks`` units, the first with ``stride`` and a projection when needed."""
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = build_conv_layer(self.conv_cfg, in_channels, out_channels, 1, stride=stride,
                                          bias=False)
        common = dict(with_cp=self.with_cp, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
                      act_cfg=self.act_cfg)
        units = [self.block(in_channels, out_channels, stride=stride, downsample=downsample, **common)]
        units += [self.block(out_channels, out_channels, **common) for _ in range(1, num_blocks)]
        return nn.Sequential(*units)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.conv1.eval()
            for param in self.conv1.parameters():
                param.requires_grad = False
        frozen = [getattr(self, f'layer{i}') for i in range(1, self.frozen_stages + 1)]
        if self.frozen_stages == self.num_stages:
            frozen.append(self.final_norm)
        for m in frozen:
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i == self.num_stages - 1:
                x = self.relu(self.final_norm(x))
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'PreResNet':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                # eval() only changes the behaviour of batch norms
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
