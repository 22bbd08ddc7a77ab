"""The implementations a block is compared with: the dense SNL in the official code's order of products, the
dense formulation of the graph blocks, and mmcv's ``NonLocal1d/2d/3d`` and ``CrissCrossAttention``."""
import functools
import importlib.util
import math
import os
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

#: the largest N x N float32 working set the references may allocate (bytes); larger cases skip them
REFERENCE_LIMIT_BYTES = 6 << 30


class OfficialOrderSNL(nn.Module):
    """SNL (order 2) in the official code's order of products, for comparison only.

    ``M = relu(theta) relu(phi)^T`` is formed as an ``N x N`` matrix, symmetrised ``(M + M^T) / 2``,
    normalised ``D^-1/2 M D^-1/2`` (``d = 0`` gives a zero row), then ``Y = X + relu(bn(Z W_1 + A Z W_2))``
    with ``A Z`` one ``bmm``. The parameter names are :class:`~snl_mm.blocks.SNLBlock`'s, so its state dict
    loads unchanged. Input ``(B, C, *S)``, any rank (the 1x1 convolutions run on the flattened map).

    Args:
        in_channels (int): ``C``.
        inner_channels (int): ``Cs``.
        bias (bool): bias in the 1x1 convolutions.
        act (bool): the ReLU after the norm.
    """

    def __init__(self, in_channels: int, inner_channels: int, bias: bool = False, act: bool = True):
        super().__init__()
        self.theta = nn.Conv2d(in_channels, inner_channels, 1, bias=bias)
        self.phi = nn.Conv2d(in_channels, inner_channels, 1, bias=bias)
        self.g = nn.Conv2d(in_channels, inner_channels, 1, bias=bias)
        self.w1 = nn.Conv2d(inner_channels, in_channels, 1, bias=bias)
        self.w2 = nn.Conv2d(inner_channels, in_channels, 1, bias=bias)
        self.norm = nn.BatchNorm2d(in_channels)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        xf = x.reshape(b, c, -1, 1)
        t = F.relu(self.theta(xf)).flatten(2).permute(0, 2, 1)  # (B, N, Cs)
        p = F.relu(self.phi(xf)).flatten(2)  # (B, Cs, N)
        att = torch.bmm(t, p)
        att = (att + att.permute(0, 2, 1)) / 2
        d = att.sum(dim=2)
        nonzero = d != 0
        d = torch.where(nonzero, torch.where(nonzero, d, torch.ones_like(d)).rsqrt(), torch.zeros_like(d))
        att = att * d.unsqueeze(1)
        att = att * d.unsqueeze(2)
        g = self.g(xf)  # (B, Cs, N, 1)
        cs = g.shape[1]
        x1 = self.w1(g)
        x2 = torch.bmm(att, g.flatten(2).permute(0, 2, 1))
        x2 = x2.permute(0, 2, 1).contiguous().view(b, cs, -1, 1)
        out = self.norm(x1 + self.w2(x2))
        if self.act:
            out = F.relu(out)
        return x + out.reshape(x.shape)


class Recurrent(nn.Module):
    """Apply one module ``times`` times (CCNet's recurrent criss-cross attention)."""

    def __init__(self, module: nn.Module, times: int):
        super().__init__()
        self.module = module
        self.times = times

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(self.times):
            x = self.module(x)
        return x


def load_matching(module: nn.Module, state_dict: Dict[str, Tensor]) -> None:
    """Load ``state_dict`` strictly, reshaping tensors whose element count matches (1x1 kernels of any
    rank)."""
    own = module.state_dict()
    fixed = {}
    for key, value in state_dict.items():
        target = own.get(key)
        if target is not None and target.shape != value.shape and target.numel() == value.numel():
            value = value.reshape(target.shape)
        fixed[key] = value
    module.load_state_dict(fixed, strict=True)


@functools.lru_cache(maxsize=None)
def mmcv_criss_cross() -> type:
    """mmcv's ``CrissCrossAttention``: pure PyTorch since mmcv 1.3.13, but ``mmcv.ops`` imports the compiled
    extension first. With mmcv-lite (no compiled ops) its own source file, ``mmcv/ops/cc_attention.py``, is
    loaded by itself (it needs only torch, mmengine and ``mmcv.cnn``)."""
    try:
        from mmcv.ops import CrissCrossAttention
        return CrissCrossAttention
    except ImportError:
        spec = importlib.util.find_spec('mmcv')
        if spec is None or not spec.submodule_search_locations:
            raise
        path = os.path.join(list(spec.submodule_search_locations)[0], 'ops', 'cc_attention.py')
        file_spec = importlib.util.spec_from_file_location('mmcv_ops_cc_attention', path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        return module.CrissCrossAttention


def reference(kind: str, block: nn.Module, shape: Sequence[int]) -> Tuple[Optional[nn.Module], str]:
    """The ``'dense'`` or ``'mmcv'`` counterpart of ``block`` with its weights, or None and why not.

    Args:
        kind (str): ``'dense'`` or ``'mmcv'``.
        block (nn.Module): a built block.
        shape (sequence[int]): the input shape ``(B, C, *S)``.
    """
    if kind not in ('dense', 'mmcv'):
        raise ValueError(f"reference kind must be 'dense' or 'mmcv', got {kind!r}")
    b, n = shape[0], math.prod(shape[2:])
    # the references hold a few (B, N, N) float32 buffers at once
    if 4 * b * n * n * 4 > REFERENCE_LIMIT_BYTES:
        return None, f'N x N reference needs > {REFERENCE_LIMIT_BYTES >> 30} GiB'
    ref, why = (_dense if kind == 'dense' else _mmcv)(block, len(shape) - 2)
    if ref is None:
        return None, why
    load_matching(ref.module if isinstance(ref, Recurrent) else ref, block.state_dict())
    return ref.to(next(block.parameters()).device).train(block.training), ''


def _dense(block: nn.Module, rank: int) -> Tuple[Optional[nn.Module], str]:
    from snl_mm.blocks import GraphNonlocalBlock, SNLBlock
    if isinstance(block, SNLBlock):
        if block.filter_spec.order != 2 or block.num_units != 1 or block.norm_cfg != dict(type='BN'):
            return None, 'the official order exists for order=2, one unit, BN'
        return OfficialOrderSNL(block.in_channels, block.inner_channels, bias=block.g.bias is not None,
                                act=block.act is not None), ''
    if isinstance(block, GraphNonlocalBlock):
        graph = block.graph
        spec = block.filter_spec
        return GraphNonlocalBlock(
            block.in_channels, inner_channels=block.inner_channels,
            affinity=dict(kernel=graph.kernel, symmetrize=graph.symmetrize, normalize=graph.normalize,
                          scale=graph.scale, path='dense'),
            graph_filter=dict(order=spec.order, terms=spec.terms, shared_coefficients=spec.shared_coefficients),
            num_units=block.num_units, bias=block.g.bias is not None, conv_cfg=block.conv_cfg,
            norm_cfg=block.norm_cfg, act_cfg=block.act_cfg), ''
    return None, 'no dense formulation'


def _mmcv(block: nn.Module, rank: int) -> Tuple[Optional[nn.Module], str]:
    from snl_mm.blocks import CCBlock, NLBlock
    if isinstance(block, NLBlock):
        from mmcv.cnn import NonLocal1d, NonLocal2d, NonLocal3d
        if block.in_channels % block.inner_channels or block.act is not None:
            return None, 'mmcv NonLocal has no such setting'
        norm_cfg = block.norm_cfg
        if norm_cfg is not None and norm_cfg.get('type') in ('BN', 'BN1d', 'BN2d', 'BN3d'):
            norm_cfg = dict(norm_cfg, type={1: 'BN1d', 2: 'BN', 3: 'BN3d'}[rank])  # mmcv's per-rank BN
        cls = {1: NonLocal1d, 2: NonLocal2d, 3: NonLocal3d}[rank]
        return cls(block.in_channels, sub_sample=block.sub_sample,
                   reduction=block.in_channels // block.inner_channels, use_scale=block.use_scale,
                   norm_cfg=norm_cfg, mode=block.mode), ''
    if isinstance(block, CCBlock):
        if rank != 2 or block.key_channels != block.in_channels // 8:
            return None, 'mmcv CrissCrossAttention is 2D with C/8 keys'
        try:
            cca = mmcv_criss_cross()
        except Exception as err:  # noqa: BLE001  (no mmcv source to load it from)
            return None, f'mmcv CrissCrossAttention not importable ({type(err).__name__})'
        return Recurrent(cca(block.in_channels), block.recurrence), ''
    return None, 'no mmcv implementation'
