"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual Networks").

The CIFAR backbone of the paper's ablations (Sec. 3.1: PreResNet-56, one block right after the second
residual block of the first stage). Each residual unit computes ``x + F(x)`` with the branch
``F = conv(act(norm(...)))`` in pre-activation order; nothing follows the addition, so the identity path is
clean from the stem to the final norm.

``depth`` names the layouts of the paper's reference code (widths 16/32/64 before expansion): 20 is three stages
of three ``PreActBasicBlock`` (output channels 16, 32, 64), 56 and 110 of nine and eighteen ``PreActBottleneck``
(64, 128, 256). Around the same units, two layouts: He et al. 2016's (``projection='preact'``: a 1x1 projection of
the pre-activated input, which is also the shortcut; a final norm and activation after the last stage), and the
spectral paper's code, ``SNL-Classification/model/preresnet_snl.py`` (``projection='conv_bn'``: a 1x1 conv and a
norm on the unit's raw input, shortcut ``x``; ``final_conv=True``: then a 1x1 conv, norm and activation).

The second is the network that produced the paper's CIFAR numbers; that code then averages, drops half of the
pooled features (``nn.Dropout(0.5)``) and classifies with one linear layer: in mmpretrain's ``ImageClassifier``
that is ``neck=dict(type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5)`` and a ``LinearClsHead``.

Positions for ``plugins``: ``after_convK`` is the output of conv K (in pre-activation order conv K's norm and
activation come before it), for each conv of the unit; ``after_block`` is the unit's output.
"""
from typing import Dict, Optional, Sequence, Tuple, Type

import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm
from torch import Tensor

from snl_mm.plugins import PluginEntries, Site, add_plugins, register_sites
from snl_mm.registry import MODELS

ConfigType = Optional[dict]


class PreActBasicBlock(BaseModule):
    """Pre-activation basic unit: ``x + conv2(act(norm2(conv1(act(norm1(x))))))``, 3x3 convolutions.

    A projection shortcut (``downsample``) takes the pre-activated input ``act(norm1(x))`` when
    ``preact_shortcut`` (He et al. 2016), else the raw input ``x`` (the spectral paper's code, whose projection is
    a 1x1 convolution and a norm); an identity shortcut takes ``x``.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        stride (int): stride of ``conv1``. Default: 1.
        downsample (nn.Module, optional): projection shortcut. Default: None (identity).
        with_cp (bool): run the unit under ``torch.utils.checkpoint`` when training. Default: False.
        conv_cfg (dict, optional): convolution config. Default: None (``nn.Conv2d``).
        norm_cfg (dict): norm config. Default: ``dict(type='BN')``.
        act_cfg (dict): activation config. Default: ``dict(type='ReLU', inplace=True)``.
        preact_shortcut (bool): the projection takes the pre-activated input (True) or the raw input.
            Default: True.
        init_cfg (dict, optional): mmengine init config.

    Shape: ``(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)``.
    """

    expansion = 1
    #: the branch's convolutions: (kernel size, whether it takes the unit's stride)
    branch_convs: Tuple[Tuple[int, bool], ...] = ((3, True), (3, False))

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 downsample: Optional[nn.Module] = None,
                 with_cp: bool = False,
                 conv_cfg: ConfigType = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 preact_shortcut: bool = True,
                 init_cfg: ConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if out_channels % self.expansion:
            raise ValueError(f'{type(self).__name__}: out_channels={out_channels} must be divisible by the '
                             f'expansion {self.expansion}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mid_channels = out_channels // self.expansion
        self.stride = stride
        self.preact_shortcut = preact_shortcut
        self.with_cp = with_cp
        # norm i pre-activates the input of conv i: norm1, conv1, norm2, conv2... (the keys of the paper's code)
        widths = [in_channels] + [self.mid_channels] * (len(self.branch_convs) - 1) + [out_channels]
        self.norm_names = []
        for i, (kernel, strided) in enumerate(self.branch_convs, start=1):
            name, norm = build_norm_layer(norm_cfg, widths[i - 1], postfix=i)
            self.add_module(name, norm)
            self.norm_names.append(name)
            setattr(self, f'conv{i}', build_conv_layer(conv_cfg, widths[i - 1], widths[i], kernel,
                                                       stride=stride if strided else 1, padding=kernel // 2,
                                                       bias=False))
        self.relu = build_activation_layer(act_cfg)
        self.downsample = downsample

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm_names[0])

    def _branch(self, x: Tensor) -> Tensor:
        """The branch after the first pre-activation: conv1, then norm-act-conv for each further conv."""
        out = self.conv1(x)
        for i in range(2, len(self.branch_convs) + 1):
            out = getattr(self, f'conv{i}')(self.relu(getattr(self, self.norm_names[i - 1])(out)))
        return out

    def forward(self, x: Tensor) -> Tensor:

        def _inner_forward(x: Tensor) -> Tensor:
            out = self.relu(self.norm1(x))
            if self.downsample is None:
                identity = x
            else:
                identity = self.downsample(out if self.preact_shortcut else x)
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
    branch_convs = ((1, False), (3, True), (1, False))


@register_sites(PreActBasicBlock)
def preact_sites(block: PreActBasicBlock) -> Dict[str, Site]:
    """Positions of :class:`PreActBasicBlock` and :class:`PreActBottleneck`: each conv's output, and the unit's."""
    sites = {f'after_conv{i}': Site(f'conv{i}', 'post') for i in range(1, len(block.branch_convs) + 1)}
    return dict(sites, after_block=Site('', 'post'))


@MODELS.register_module()
class PreResNet(BaseModule):
    """Pre-activation ResNet for 32x32 inputs, an mmpretrain-style backbone (it needs only mmengine and mmcv).

    Stem: one 3x3 convolution (no norm: the first unit pre-activates it). Stages of pre-activation units,
    the first unit of a stage projecting with a 1x1 convolution when the stride or the width changes. The
    last stage's output goes through a final norm and activation (and, with ``final_conv``, a 1x1 convolution,
    a norm and an activation: the spectral paper's ``fc1``, ``bn2``). Works in mmpretrain's ``ImageClassifier``
    with ``GlobalAveragePooling`` and ``LinearClsHead`` (``in_channels=feat_dim``: 64 for depth 20, 256 for 56
    and 110). The module docstring compares the two layouts ``projection`` and ``final_conv`` select.

    Args:
        depth (int): 20, 56 or 110 (see the module docstring for the layouts).
        in_channels (int): input image channels. Default: 3.
        stem_channels (int): output channels of the stem convolution. Default: 16.
        base_channels (int): width of the first stage before expansion; doubles every stage. Default: 16.
        num_stages (int): stages, 1 to 3. Default: 3.
        strides (Sequence[int]): stride of the first unit of each stage. Default: ``(1, 2, 2)``.
        out_indices (Sequence[int]): stages whose outputs are returned (negative allowed). The last stage's
            output is returned after the final norm and activation (and ``final_conv``). Default: ``(2,)``.
        frozen_stages (int): stages to freeze (eval mode, no gradient): -1 none, 0 the stem, i the stem and
            stages 1..i; the final norm (and ``final_conv``) is frozen with the last stage. Default: -1.
        conv_cfg (dict, optional): convolution config. Default: None.
        norm_cfg (dict): norm config. Default: ``dict(type='BN', requires_grad=True)``.
        act_cfg (dict): activation config. Default: ``dict(type='ReLU', inplace=True)``.
        norm_eval (bool): keep BN layers in eval mode while training. Default: False.
        with_cp (bool): run each unit under ``torch.utils.checkpoint``. Default: False.
        projection (str): ``'preact'``: a 1x1 convolution on the pre-activated input (He et al. 2016);
            ``'conv_bn'``: a 1x1 convolution and a norm on the raw input (the spectral paper's code).
            Default: ``'preact'``.
        final_conv (bool): a 1x1 convolution (no bias), norm and activation after the final norm and
            activation, as the spectral paper's code. Default: False.
        plugins (list[dict], optional): blocks to insert (:mod:`snl_mm.plugins.entries`); the paper's
            ablation placement is ``dict(cfg=dict(type='SNLBlock'), stages=(True, False, False), blocks=(1,))``.
            Default: None.
        probe_shape (tuple, optional): input shape of the build-time check. Default: ``(1, in_channels, 32, 32)``.
        init_cfg (dict | list): mmengine init config. Default: Kaiming for convolutions, 1 for norms.

    Shape: ``(B, in_channels, H, W)`` -> tuple of ``(B, C_i, H / s_i, W / s_i)`` for ``i`` in ``out_indices``.
    """

    PROJECTIONS = ('preact', 'conv_bn')
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
                 projection: str = 'preact',
                 final_conv: bool = False,
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
        if projection not in self.PROJECTIONS:
            raise ValueError(f'PreResNet: invalid projection {projection!r}; valid: {self.PROJECTIONS}')
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
        self.projection = projection
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
        # the reference code's fc1 / bn2: a 1x1 convolution on the normalised, activated last stage
        self.final_conv = None
        if final_conv:
            self.final_conv = build_conv_layer(conv_cfg, channels, channels, 1, bias=False)
            self.final_conv_norm_name, final_conv_norm = build_norm_layer(norm_cfg, channels, postfix='_conv')
            self.add_module(self.final_conv_norm_name, final_conv_norm)

        self.in_channels = in_channels
        self._freeze_stages()
        self.plugins = plugins
        add_plugins(self, plugins, probe_shape or (1, in_channels, 32, 32))  # one CIFAR image

    @property
    def final_norm(self) -> nn.Module:
        return getattr(self, self.final_norm_name)

    def _head(self, x: Tensor) -> Tensor:
        """The last stage's output: final norm and activation (then the reference code's 1x1 conv)."""
        x = self.relu(self.final_norm(x))
        if self.final_conv is not None:
            x = self.relu(getattr(self, self.final_conv_norm_name)(self.final_conv(x)))
        return x

    def make_res_layer(self, num_blocks: int, in_channels: int, out_channels: int,
                       stride: int) -> nn.Sequential:
        """One stage: ``num_blocks`` units, the first with ``stride`` and a projection when needed."""
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = build_conv_layer(self.conv_cfg, in_channels, out_channels, 1, stride=stride,
                                          bias=False)
            if self.projection == 'conv_bn':
                downsample = nn.Sequential(downsample, build_norm_layer(self.norm_cfg, out_channels)[1])
        common = dict(with_cp=self.with_cp, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
                      act_cfg=self.act_cfg)
        units = [self.block(in_channels, out_channels, stride=stride, downsample=downsample,
                            preact_shortcut=self.projection == 'preact', **common)]
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
            if self.final_conv is not None:
                frozen += [self.final_conv, getattr(self, self.final_conv_norm_name)]
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
                x = self._head(x)
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
