"""The implementations a block is compared with: the dense SNL in the official code's order of products, the
dense formulation of the graph blocks, mmcv's ``NonLocal1d/2d/3d``, ``CrissCrossAttention`` and ``ContextBlock`` (GC),
and mmsegmentation's ``PAM``, ``CAM``, EMA unit (:class:`MMSegEMAUnit`), ``DisentangledNonLocal2d`` (DNL), ANN
attention (:class:`MMSegANN`) and ``ISAHead`` relations (:class:`MMSegISA`)."""
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


class MMSegEMAUnit(nn.Module):
    """mmsegmentation's EMA unit as its ``EMAHead`` runs it between ``ema_in_conv`` and ``bottleneck``:
    ``identity + ema_out_conv(relu(ema_module(ema_mid_conv(identity))))``, then ReLU when ``relu_after`` (the head;
    without it, the residual form of :class:`~snl_mm.blocks.EMABlock`'s default ``fusion='residual'``). Its modules
    are mmsegmentation's ``EMAModule`` and mmcv's ``ConvModule`` under the head's names, which
    :class:`~snl_mm.blocks.EMABlock` shares, so either's state dict loads into the other. 2D input.

    Args:
        channels (int): ``C`` (the head's ``ema_channels``).
        num_bases, num_stages (int), momentum (float): the ``EMAModule``'s.
        norm_cfg (dict, optional): the norm of ``ema_out_conv``.
        relu_after (bool): the head's ReLU after the residual sum.
    """

    def __init__(self, channels: int, num_bases: int, num_stages: int, momentum: float,
                 norm_cfg: Optional[Dict] = dict(type='BN'), relu_after: bool = True):
        super().__init__()
        from mmcv.cnn import ConvModule
        from mmseg.models.decode_heads.ema_head import EMAModule
        self.ema_module = EMAModule(channels, num_bases, num_stages, momentum)
        self.ema_mid_conv = ConvModule(channels, channels, 1, norm_cfg=None, act_cfg=None)
        for param in self.ema_mid_conv.parameters():
            param.requires_grad = False
        self.ema_out_conv = ConvModule(channels, channels, 1, norm_cfg=norm_cfg, act_cfg=None)
        self.relu_after = relu_after

    def forward(self, x: Tensor) -> Tensor:
        recon = self.ema_module(self.ema_mid_conv(x))
        out = x + self.ema_out_conv(F.relu(recon, inplace=True))
        return F.relu(out, inplace=True) if self.relu_after else out


class MMSegANN(nn.Module):
    """mmsegmentation's ANN attention (``ann_head.SelfAttentionBlock``: keys and values pooled by ``PPMConcat``, the
    ``N x S`` similarity map, the query/key/value/out projections), one stage per query scale, with the fusion of
    the block it is compared with: mmsegmentation's ``bottleneck(cat(context, x))`` (``APNB`` / ``AFNB`` as they
    are) or :class:`~snl_mm.blocks.APNBBlock`'s default ``x + norm(context)``. The names are mmsegmentation's, which
    the blocks share, so either's state dict loads into the other. Keys and values from ``x`` (an ``AFNBBlock``
    called without context); 2D input.

    Args:
        block (nn.Module): an :class:`~snl_mm.blocks.APNBBlock` or :class:`~snl_mm.blocks.AFNBBlock`.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        from mmcv.cnn import ConvModule, build_norm_layer
        from mmseg.models.decode_heads.ann_head import SelfAttentionBlock
        c = block.in_channels
        self.stages = nn.ModuleList(
            SelfAttentionBlock(block.context_channels, c, block.inner_channels, c, block.share_key_query, 1,
                               block.pool_scales, block.conv_cfg, block.norm_cfg, block.act_cfg)
            for _ in block.query_scales)
        self.concat = block.fusion == 'concat'
        if self.concat:
            self.bottleneck = ConvModule(2 * c, c, 1, conv_cfg=block.conv_cfg, norm_cfg=block.norm_cfg,
                                         act_cfg=block.act_cfg if block.bottleneck_act else None)
        else:
            self.norm = None if block.norm_cfg is None else build_norm_layer(block.norm_cfg, c)[1]

    def forward(self, x: Tensor) -> Tensor:
        context = torch.stack([stage(x, x) for stage in self.stages]).sum(0)
        if self.concat:
            return self.bottleneck(torch.cat([context, x], dim=1))
        return x + (context if self.norm is None else self.norm(context))


class MMSegISA(nn.Module):
    """The middle of mmsegmentation's ``ISAHead`` (between ``in_conv`` and the classifier): pad to whole cells,
    the long-range relation on the permuted map, the short-range one, permute back, crop, with mmsegmentation's
    relations (``isa_head.SelfAttentionBlock``, whose ``N x n`` similarity maps are formed per group) and the
    fusion of the block: ``out_conv(cat(x, context))`` (upstream's) or :class:`~snl_mm.blocks.ISABlock`'s default
    ``x + out_conv(context)``. The names are mmsegmentation's, which the block shares. 2D input.

    Args:
        block (nn.Module): an :class:`~snl_mm.blocks.ISABlock` with a 2D ``down_factor``.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        from mmcv.cnn import ConvModule
        from mmseg.models.decode_heads.isa_head import SelfAttentionBlock
        c, cfgs = block.in_channels, dict(conv_cfg=block.conv_cfg, norm_cfg=block.norm_cfg, act_cfg=block.act_cfg)
        self.global_relation = SelfAttentionBlock(c, block.inner_channels, **cfgs)
        self.local_relation = SelfAttentionBlock(c, block.inner_channels, **cfgs)
        self.concat = block.fusion == 'concat'
        self.out_conv = ConvModule(2 * c if self.concat else c, c, 1, conv_cfg=block.conv_cfg,
                                   norm_cfg=block.norm_cfg, act_cfg=block.act_cfg if self.concat else None)
        factor = block.down_factor
        self.down_factor = (factor, factor) if isinstance(factor, int) else tuple(factor)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        loc_h, loc_w = self.down_factor
        glb_h, glb_w = math.ceil(h / loc_h), math.ceil(w / loc_w)
        pad_h, pad_w = glb_h * loc_h - h, glb_w * loc_w - w
        y = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        y = y.view(n, c, glb_h, loc_h, glb_w, loc_w).permute(0, 3, 5, 1, 2, 4).reshape(-1, c, glb_h, glb_w)
        y = self.global_relation(y)
        y = y.view(n, loc_h, loc_w, c, glb_h, glb_w).permute(0, 4, 5, 3, 1, 2).reshape(-1, c, loc_h, loc_w)
        y = self.local_relation(y)
        y = y.view(n, glb_h, glb_w, c, loc_h, loc_w).permute(0, 3, 1, 4, 2, 5)
        y = y.reshape(n, c, glb_h * loc_h, glb_w * loc_w)[:, :, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w]
        if self.concat:
            return self.out_conv(torch.cat([y, x], dim=1))
        return x + self.out_conv(y)


#: blocks whose upstream reference holds no ``N x N`` buffer (no size limit for them)
LINEAR_REFERENCES: Tuple[str, ...] = ('CAMBlock', 'EMABlock', 'GCBlock', 'APNBBlock', 'AFNBBlock', 'ISABlock')


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


def reference(kind: str, block: nn.Module, shape: Sequence[int],
              limit_bytes: int = REFERENCE_LIMIT_BYTES) -> Tuple[Optional[nn.Module], str]:
    """The ``'dense'`` or ``'mmcv'`` counterpart of ``block`` with its weights, or None and why not.

    Args:
        kind (str): ``'dense'`` or ``'mmcv'``.
        block (nn.Module): a built block.
        shape (sequence[int]): the input shape ``(B, C, *S)``.
        limit_bytes (int): skip a reference whose ``N x N`` buffers would need more (estimated as four
            ``(B, N, N)`` float32 maps). Default: :data:`REFERENCE_LIMIT_BYTES`.
    """
    if kind not in ('dense', 'mmcv'):
        raise ValueError(f"reference kind must be 'dense' or 'mmcv', got {kind!r}")
    b, n = shape[0], math.prod(shape[2:])
    # the references hold a few (B, N, N) float32 buffers at once
    if 4 * b * n * n * 4 > limit_bytes and not (kind == 'mmcv' and type(block).__name__ in LINEAR_REFERENCES):
        return None, f'N x N reference needs > {limit_bytes / 2**30:g} GiB'
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
        if not hasattr(graph, 'config'):
            return None, 'no dense formulation of this affinity'
        return GraphNonlocalBlock(
            block.in_channels, inner_channels=block.inner_channels,
            affinity=dict(graph.config, path='dense'),
            graph_filter=dict(order=spec.order, terms=spec.terms, shared_coefficients=spec.shared_coefficients),
            num_units=block.num_units, bias=block.g.bias is not None, conv_cfg=block.conv_cfg,
            norm_cfg=block.norm_cfg, act_cfg=block.act_cfg), ''
    return None, 'no dense formulation'


def _mmcv(block: nn.Module, rank: int) -> Tuple[Optional[nn.Module], str]:
    from snl_mm.blocks import CCBlock, NLBlock
    gc_dnl = _mmcv_gc_dnl(block, rank)
    if gc_dnl is not None:  # before NLBlock: DNLBlock is one
        return gc_dnl
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
    danet_ema = _mmseg_danet_ema(block, rank)
    if danet_ema is not None:
        return danet_ema
    ann_isa = _mmseg_ann_isa(block, rank)
    if ann_isa is not None:
        return ann_isa
    return None, 'no mmcv implementation'


def _mmseg_ann_isa(block: nn.Module, rank: int) -> Optional[Tuple[Optional[nn.Module], str]]:
    """mmsegmentation's ANN attention (:class:`MMSegANN`) for :class:`~snl_mm.blocks.APNBBlock` and
    :class:`~snl_mm.blocks.AFNBBlock`, and the middle of its ``ISAHead`` (:class:`MMSegISA`) for
    :class:`~snl_mm.blocks.ISABlock`; None for other blocks."""
    from snl_mm.blocks import AFNBBlock, APNBBlock, ISABlock
    if not isinstance(block, (APNBBlock, AFNBBlock, ISABlock)):
        return None
    if rank != 2:
        return None, 'mmsegmentation\'s module is 2D'
    if isinstance(block, AFNBBlock) and block.context_channels != block.in_channels:
        return None, 'the benchmark calls AFNBBlock without a context map'
    try:
        import mmseg.models.decode_heads  # noqa: F401
    except Exception as err:  # noqa: BLE001  (mmsegmentation needs a compiled mmcv)
        return None, f'mmsegmentation not importable ({type(err).__name__})'
    if isinstance(block, ISABlock):
        return MMSegISA(block), ''
    return MMSegANN(block), ''


def _mmseg_danet_ema(block: nn.Module, rank: int) -> Optional[Tuple[Optional[nn.Module], str]]:
    """mmsegmentation's ``PAM``, ``CAM`` (``da_head.py``) and EMA unit (``ema_head.py``, :class:`MMSegEMAUnit`) for
    :class:`~snl_mm.blocks.PAMBlock`, :class:`~snl_mm.blocks.CAMBlock` and :class:`~snl_mm.blocks.EMABlock`; None
    for other blocks."""
    from snl_mm.blocks import CAMBlock, EMABlock, PAMBlock
    if not isinstance(block, (PAMBlock, CAMBlock, EMABlock)):
        return None
    if rank != 2:
        return None, 'mmsegmentation\'s module is 2D'
    try:
        from mmseg.models.decode_heads.da_head import CAM, PAM
    except Exception as err:  # noqa: BLE001  (mmsegmentation needs a compiled mmcv)
        return None, f'mmsegmentation not importable ({type(err).__name__})'
    if isinstance(block, PAMBlock):
        return PAM(block.in_channels, block.key_channels), ''
    if isinstance(block, CAMBlock):
        return CAM(), ''
    if block.act is not None or block.grad != 'none':
        return None, 'mmsegmentation\'s EMA unit has no such setting'
    return MMSegEMAUnit(block.in_channels, block.num_bases, block.num_stages, block.momentum,
                        norm_cfg=block.norm_cfg, relu_after=block.fusion == 'residual_relu'), ''


def _mmcv_gc_dnl(block: nn.Module, rank: int) -> Optional[Tuple[Optional[nn.Module], str]]:
    """mmcv's ``ContextBlock`` for :class:`~snl_mm.blocks.GCBlock` and mmsegmentation's ``DisentangledNonLocal2d``
    (``dnl_head.py``) for :class:`~snl_mm.blocks.DNLBlock`; None for other blocks."""
    from snl_mm.blocks import DNLBlock, GCBlock
    if not isinstance(block, (GCBlock, DNLBlock)):
        return None
    if rank != 2:
        return None, 'the upstream module is 2D'
    if isinstance(block, GCBlock):
        if block.conv_cfg is not None or block.norm_cfg != dict(type='LN') or block.act_cfg != dict(type='ReLU') \
                or block.inner_channels != int(block.in_channels * block.ratio):
            return None, "mmcv's ContextBlock has no such setting"
        from mmcv.cnn import ContextBlock
        return ContextBlock(block.in_channels, block.ratio, block.pooling_type, block.fusion_types), ''
    if block.in_channels % block.inner_channels or block.act is not None or block.g.conv.bias is None:
        return None, "mmsegmentation's DisentangledNonLocal2d has no such setting"
    if block.mode == 'gaussian':
        return None, "mmsegmentation's gaussian mode centres its input in place (its residual differs)"
    try:
        from mmseg.models.decode_heads.dnl_head import DisentangledNonLocal2d
    except Exception as err:  # noqa: BLE001  (mmsegmentation needs a compiled mmcv)
        return None, f'mmsegmentation not importable ({type(err).__name__})'
    return DisentangledNonLocal2d(block.in_channels, reduction=block.in_channels // block.inner_channels,
                                  use_scale=block.use_scale, conv_cfg=block.conv_cfg, norm_cfg=block.norm_cfg,
                                  mode=block.mode, temperature=block.temperature), ''
