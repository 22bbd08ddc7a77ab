"""The base every nonlocal block shares: channels, 1x1 projections, output norm + residual, identity init.

A block sees its input ``X`` of shape ``(B, C, *S)`` with ``S`` = ``(L,)``, ``(H, W)`` or ``(T, H, W)``. One
instance serves every rank: the 1x1 projections run on the flattened map ``(B, C, N, 1)`` (``N = prod(S)``),
so their weights and the output norm (BN, GN, SyncBN over channels) do not depend on the rank. A checkpoint
of a rank-specific module (``NonLocal3d``'s ``(C_out, C_in, 1, 1, 1)`` kernels, say) loads unchanged: 1x1
kernels are reshaped to this layout when a state dict is loaded.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule, constant_init, normal_init
from torch import Tensor

ConfigType = Optional[Dict]


def flat_norm_cfg(norm_cfg: ConfigType) -> ConfigType:
    """The norm config for the flattened ``(B, C, N, 1)`` map.

    ``BN1d`` / ``BN3d`` (as in mmaction2's non-local configs) normalise per channel over batch and
    positions, exactly what ``BN`` does on the flattened map, and keep the same state-dict keys.
    """
    if norm_cfg is not None and norm_cfg.get('type') in ('BN1d', 'BN3d'):
        return dict(norm_cfg, type='BN')
    return norm_cfg


def flatten_map(x: Tensor) -> Tensor:
    """``(B, C, *S) -> (B, C, N, 1)``: a view, so 1x1 convs and norms run on any rank."""
    return x.reshape(x.shape[0], x.shape[1], -1, 1)


def to_tokens(m: Tensor) -> Tensor:
    """``(B, c, N, 1) -> (B, N, c)``."""
    return m.flatten(2).transpose(1, 2)


def from_tokens(t: Tensor) -> Tensor:
    """``(B, N, c) -> (B, c, N, 1)``."""
    return t.transpose(1, 2).unsqueeze(-1)


def _is_plain_pointwise(conv: nn.Module) -> bool:
    return type(conv) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and conv.groups == 1 \
        and set(conv.kernel_size) == {1} and set(conv.stride) == {1} and not any(conv.padding)


def pointwise_tokens(convs: Sequence[nn.Module], t: Tensor) -> Tensor:
    """1x1 convolutions applied to a grid in token layout ``(B, *S, C_in)``, their outputs concatenated on
    the channels: ``(B, *S, sum C_out)``.

    Plain 1x1 ``nn.Conv{1,2,3}d`` layers are one matrix product ``t [W_1; W_2; ...]^T + b`` on the channels,
    computed in place of the convolutions so that the grid keeps its layout and the input gradient is one
    product; any other layer (a custom ``conv_cfg``) runs as a convolution on the flattened channel-first
    map.
    """
    if all(_is_plain_pointwise(conv) for conv in convs):
        weight = torch.cat([conv.weight.flatten(1) for conv in convs])
        biases = [conv.bias for conv in convs]
        if all(b is None for b in biases):
            bias = None
        else:
            bias = torch.cat([b if b is not None else conv.weight.new_zeros(conv.out_channels)
                              for b, conv in zip(biases, convs)])
        return F.linear(t, weight, bias)
    b, c = t.shape[0], t.shape[-1]
    flat = from_tokens(t.reshape(b, -1, c))
    out = torch.cat([conv(flat) for conv in convs], dim=1)
    return to_tokens(out).reshape(*t.shape[:-1], -1)


class NonlocalBase(BaseModule):
    """Base of the nonlocal blocks.

    Args:
        in_channels (int): channels ``C`` of the input.
        reduction (int): ``Cs = C // reduction`` inner channels. Default: 2 (the paper's).
        inner_channels (int, optional): ``Cs`` given directly; overrides ``reduction``.
        conv_cfg (dict, optional): config of the 1x1 convolutions (``nn.Conv2d`` when None; they run on the
            flattened ``(B, C, N, 1)`` map).
        norm_cfg (dict, optional): config of the output norm (BN, GN, SyncBN...); None for none.
        act_cfg (dict, optional): activation after the output norm; None for none.
        init_cfg (dict | list, optional): mmengine init config; by default :meth:`init_weights` gives the
            projections ``N(0, 0.01)`` and zeroes the output norm's weight (or the output convs when there
            is no norm), so a freshly built block is the identity.

    Attributes:
        spatial_ranks (tuple[int]): the input ranks ``len(S)`` the block accepts.
    """

    spatial_ranks: Tuple[int, ...] = (1, 2, 3)
    #: names of the 1x1 convs that project the input (``N(0, std)`` at init)
    _projection_names: Tuple[str, ...] = ()

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(f'{type(self).__name__}: in_channels must be a positive integer, got '
                             f'{in_channels!r}')
        if inner_channels is None:
            if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
                raise ValueError(f'{type(self).__name__}: reduction must be a positive integer, got '
                                 f'{reduction!r}')
            if in_channels % reduction:
                divisors = [r for r in range(1, in_channels + 1) if in_channels % r == 0]
                raise ValueError(
                    f'{type(self).__name__}: in_channels={in_channels} is not divisible by '
                    f'reduction={reduction}; valid reductions: {divisors[:12]}'
                    f'{" ..." if len(divisors) > 12 else ""} (or give inner_channels)')
            inner_channels = in_channels // reduction
        elif not isinstance(inner_channels, int) or isinstance(inner_channels, bool) \
                or inner_channels < 1:
            raise ValueError(f'{type(self).__name__}: inner_channels must be a positive integer, got '
                             f'{inner_channels!r}')
        for name, cfg in (('conv_cfg', conv_cfg), ('norm_cfg', norm_cfg), ('act_cfg', act_cfg)):
            if cfg is not None and not (isinstance(cfg, dict) and 'type' in cfg):
                raise TypeError(f'{type(self).__name__}: {name} must be None or a dict with a "type", '
                                f'got {cfg!r}')
        self.in_channels = in_channels
        self.reduction = reduction
        self.inner_channels = inner_channels
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self._register_load_state_dict_pre_hook(self._reshape_pointwise_kernels)

    # -- building ----------------------------------------------------------------------------------
    def pointwise(self, in_channels: int, out_channels: int, bias: bool = True,
                  groups: int = 1) -> nn.Module:
        """A 1x1 convolution built from ``conv_cfg``."""
        return build_conv_layer(self.conv_cfg, in_channels, out_channels, kernel_size=1, bias=bias,
                                groups=groups)

    def build_norm(self, channels: int) -> Optional[nn.Module]:
        """The output norm from ``norm_cfg`` (None when ``norm_cfg`` is None)."""
        if self.norm_cfg is None:
            return None
        return build_norm_layer(flat_norm_cfg(self.norm_cfg), channels)[1]

    def build_act(self) -> Optional[nn.Module]:
        return None if self.act_cfg is None else build_activation_layer(self.act_cfg)

    # -- forward helpers ---------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> Tuple[int, ...]:
        """Validate ``x`` and return its spatial shape ``S``."""
        if not isinstance(x, Tensor):
            raise TypeError(f'{type(self).__name__} expects a Tensor, got {type(x).__name__}')
        rank = x.dim() - 2
        if rank not in self.spatial_ranks:
            raise ValueError(
                f'{type(self).__name__} expects input (B, C, *S) with len(S) in {self.spatial_ranks}, '
                f'got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} was built for in_channels={self.in_channels}, got '
                             f'an input with {x.shape[1]} channels')
        return tuple(x.shape[2:])

    @staticmethod
    def residual(x: Tensor, out: Tensor, norm: Optional[nn.Module],
                 act: Optional[nn.Module]) -> Tensor:
        """``x + act(norm(out))`` with ``out`` given flat ``(B, C, N, 1)``."""
        if norm is not None:
            out = norm(out)
        if act is not None:
            out = act(out)
        return x + out.reshape(x.shape)

    # -- init and checkpoints ----------------------------------------------------------------------
    def output_layers(self) -> Sequence[nn.Module]:
        """The layers zeroed at init so that the block starts as the identity."""
        raise NotImplementedError

    def init_weights(self) -> None:
        """Projections ``N(0, 0.01)``, output zeroed: the block is the identity.

        With an ``init_cfg`` (e.g. ``Pretrained``) mmengine's initialisation runs instead.
        """
        if self.init_cfg:
            super().init_weights()
            return
        for name in self._projection_names:
            for m in getattr(self, name).modules():
                if isinstance(m, nn.modules.conv._ConvNd):
                    normal_init(m, std=0.01)
        for layer in self.output_layers():
            constant_init(layer, 0)

    def _reshape_pointwise_kernels(self, state_dict, prefix, *args) -> None:
        """Accept 1x1 kernels of any rank: ``(O, I, 1, 1, 1)`` or ``(O, I, 1)`` load as ``(O, I, 1, 1)``."""
        own = dict(self.named_parameters())
        for name, param in own.items():
            key = prefix + name
            value = state_dict.get(key)
            if value is None or value.shape == param.shape or value.dim() < 3:
                continue
            if value.numel() == param.numel() and value.shape[:2] == param.shape[:2] \
                    and math.prod(value.shape[2:]) == 1:
                state_dict[key] = value.reshape(param.shape)

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, inner_channels={self.inner_channels}'

    # -- analysis ----------------------------------------------------------------------------------
    def affinity(self, x: Tensor) -> Tensor:
        """The dense ``(B, N, N)`` affinity of input ``x``, for analysis and pictures."""
        raise NotImplementedError
