"""The layouts a block's tensors take, and the moves between them.

A block sees its input ``X`` of shape ``(B, C, *S)`` with ``S`` = ``(L,)``, ``(H, W)`` or ``(T, H, W)``. One
instance serves every rank: the 1x1 projections run on the flattened map ``(B, C, N, 1)`` (``N = prod(S)``),
so their weights and the output norm (BN, GN, SyncBN over channels) do not depend on the rank; the graph
operators of :mod:`snl_mm.graph` take signals in token layout ``(B, N, c)``.
"""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
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


def is_plain_pointwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain 1x1 ``nn.Conv{1,2,3}d`` (ungrouped, stride 1, no padding): a matrix product on
    the channels, ``x W^T + b`` in token layout."""
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
    if all(is_plain_pointwise(conv) for conv in convs):
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
