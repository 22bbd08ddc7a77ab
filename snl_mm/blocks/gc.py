"""GC: the global context block of Cao et al. 2019 (GCNet), laid out as mmcv's ``ContextBlock``; SE is a config."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import constant_init, kaiming_init
from torch import Tensor

from snl_mm.graph import FilterSpec, PoolingAffinity, RankOneOperator
from snl_mm.registry import ROOT_MODELS
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, is_plain_pointwise, flatten_map, from_tokens, to_tokens

#: the fusions of the context into the input, in the order they are applied (mmcv's)
FUSION_TYPES = ('channel_mul', 'channel_add')
#: the norms of the bottleneck transform (it normalises one context vector per sample)
TRANSFORM_NORMS = ('LN', 'GN')


def mask_logits(conv: nn.Module, x: Tensor) -> Tensor:
    """One logit per position, ``conv(x)`` for a 1x1 convolution ``C -> 1`` on the flattened map ``(B, C, N, 1)``,
    as tokens ``(B, N, 1)``. A plain convolution runs as one matrix-vector product per sample on the channel-major
    map (forward and backward about 3 times faster on the CPU than the one-output-channel convolution); any other
    layer (a ``conv_cfg``) as built."""
    if not is_plain_pointwise(conv):
        return to_tokens(conv(x))
    # (B, 1, C) @ (B, C, N) -> (B, 1, N); bmm, not matmul: matmul folds a 2-D weight times a batch by copying the
    # map to (B N, C), and its gradient comes back in that transposed layout (a strided sum into the input's)
    maps = x.flatten(2)
    logits = torch.bmm(conv.weight.flatten(1).expand(maps.shape[0], 1, -1), maps)
    if conv.bias is not None:
        logits = logits + conv.bias.reshape(1, 1, 1)
    return logits.transpose(1, 2)


@ROOT_MODELS.register_module()
class GCBlock(NonlocalBase):
    """Global context block: ``Y = X * sigmoid(W_mul(c)) + W_add(c)``, ``c = s^T X`` the pooled context.

    Every position receives the same context ``c = sum_j s_j x_j``, pooled with attention weights
    ``s = softmax_N(conv_mask(X))`` (``pooling_type='att'``) or uniformly (``'avg'``). In the unified form (paper
    Eq. 4, second Chebyshev term) this is ``F(A, Z) = A Z W`` on the query-independent rank-one graph
    ``A = 1 s^T`` (:class:`~snl_mm.graph.PoolingAffinity`) with node features ``Z = X`` and filter weight ``W`` the
    bottleneck transform ``conv 1x1 (C -> Cs) -> LayerNorm -> ReLU -> conv 1x1 (Cs -> C)``. All rows of
    ``A Z`` are the one context, so ``W`` runs once per sample on ``(B, C, 1, 1)`` and its output is broadcast:
    ``O(N C)`` time and memory, no ``N x N`` and no per-position bottleneck. (``W`` is not linear: LayerNorm and
    ReLU sit inside it, as in GCNet.)

    Fusions, in mmcv's order: ``'channel_mul'`` scales the input, ``X * sigmoid(W_mul(c))``; ``'channel_add'``
    adds ``W_add(c)``. ``channel_add`` starts as the identity (its last convolution zero-initialised, as mmcv).
    ``channel_mul`` is mmcv's gate, not a residual: at init ``sigmoid(0) = 1/2``, so a block with it computes
    ``X / 2`` until trained, exactly as mmcv's ``ContextBlock`` (kept for its checkpoints and numbers). The SE block
    (Hu et al. 2018) is the ``avg`` + ``channel_mul`` point without LayerNorm::

        dict(type='GCBlock', ratio=1 / 16, pooling_type='avg', fusion_types=('channel_mul', ), norm_cfg=None)

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, any rank 1-3 (mmcv's module is 2D only).
        ratio (float): ``Cs = int(C * ratio)`` channels of the bottleneck. Default: 1/4 (mmsegmentation's
            ``GCHead``; GCNet's backbone blocks use 1/16).
        inner_channels (int, optional): ``Cs`` directly; overrides ``ratio``.
        pooling_type (str): ``'att'`` (attention pooling, GC) or ``'avg'`` (average pooling, SE). Default:
            ``'att'``.
        fusion_types (sequence[str]): one or both of ``'channel_add'``, ``'channel_mul'``. Default:
            ``('channel_add',)``.
        conv_cfg (dict, optional): config of the 1x1 convolutions (``nn.Conv2d`` when None).
        norm_cfg (dict, optional): the bottleneck's norm: ``dict(type='LN')`` (``nn.LayerNorm([Cs, 1, 1])``,
            mmcv's; ``eps`` may be given), a ``GN`` config, or None for none (SE). Default: ``dict(type='LN')``.
        act_cfg (dict, optional): the bottleneck's activation; None for none. Default: ``dict(type='ReLU')``.
        init_cfg (dict, optional): mmengine init config; by default mmcv's initialisation: ``conv_mask`` Kaiming
            (fan in), the last convolution of each transform zero.

    Shapes: input and output ``(B, C, *S)``; ``affinity(x)``: ``(B, N, N)``, ``s`` in every row.

    Checkpoint keys (mmcv's ``ContextBlock``, which loads strictly): ``conv_mask`` (``'att'`` only),
    ``channel_add_conv.{0,1,3}`` and ``channel_mul_conv.{0,1,3}`` (conv, norm, conv; index 2 is the ReLU); 1x1
    kernels of any rank load. The block's plugin name is mmcv's (``_abbr_ = 'context_block'``), so that an
    mmdetection GCNet backbone checkpoint loads when ``type='ContextBlock'`` becomes ``'GCBlock'``.
    """

    _abbr_ = 'context_block'
    node_feature = 'X'
    filter_spec = FilterSpec(order=2, terms=(1, ))
    POOLING_TYPES = ('att', 'avg')

    def __init__(self,
                 in_channels: int,
                 ratio: float = 1 / 4,
                 inner_channels: Optional[int] = None,
                 pooling_type: str = 'att',
                 fusion_types: Sequence[str] = ('channel_add', ),
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='LN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: ConfigType = None):
        if inner_channels is None:
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
                raise ValueError(f'GCBlock: ratio must be a number > 0, got {ratio!r}')
            if isinstance(in_channels, int) and int(in_channels * ratio) < 1:
                raise ValueError(f'GCBlock: ratio={ratio} gives int(in_channels * ratio) = '
                                 f'{int(in_channels * ratio)} bottleneck channels for in_channels={in_channels}; '
                                 f'use a ratio >= 1 / {in_channels} (or give inner_channels)')
            inner_channels = int(in_channels * ratio) if isinstance(in_channels, int) else None
        super().__init__(in_channels, 1, inner_channels, conv_cfg, norm_cfg, act_cfg, init_cfg)
        if pooling_type not in self.POOLING_TYPES:
            raise ValueError(f'GCBlock: pooling_type must be one of {self.POOLING_TYPES}, got {pooling_type!r}')
        if isinstance(fusion_types, str) or not isinstance(fusion_types, (list, tuple)) or not fusion_types \
                or any(f not in FUSION_TYPES for f in fusion_types) or len(set(fusion_types)) != len(fusion_types):
            raise ValueError(f'GCBlock: fusion_types must be a non-empty tuple of distinct entries of '
                             f'{FUSION_TYPES[::-1]}, got {fusion_types!r}')
        if norm_cfg is not None and norm_cfg['type'] not in TRANSFORM_NORMS:
            raise ValueError(f'GCBlock: norm_cfg (the bottleneck\'s norm on one context vector per sample) must '
                             f'be None or of a type in {TRANSFORM_NORMS}, got {norm_cfg!r}')
        self.ratio = ratio
        self.pooling_type = pooling_type
        self.fusion_types = tuple(fusion_types)
        if pooling_type == 'att':
            self.conv_mask = self.pointwise(in_channels, 1)
        self.graph = PoolingAffinity(pooling_type)
        self.channel_add_conv = self._transform() if 'channel_add' in self.fusion_types else None
        self.channel_mul_conv = self._transform() if 'channel_mul' in self.fusion_types else None
        self.init_weights()

    def _transform(self) -> nn.Sequential:
        """``conv (C -> Cs), norm, act, conv (Cs -> C)``; an absent norm or act is an ``nn.Identity`` so that the
        keys keep mmcv's indices."""
        cs = self.inner_channels
        if self.norm_cfg is None:
            norm = nn.Identity()
        elif self.norm_cfg['type'] == 'LN':
            extra = set(self.norm_cfg) - {'type', 'eps'}
            if extra:
                raise ValueError(f'GCBlock: an LN norm_cfg takes type and eps, got {sorted(extra)}')
            norm = nn.LayerNorm([cs, 1, 1], eps=self.norm_cfg.get('eps', 1e-5))
        else:
            norm = build_norm_layer(self.norm_cfg, cs)[1]
        act = self.build_act() or nn.Identity()
        return nn.Sequential(self.pointwise(self.in_channels, cs), norm, act, self.pointwise(cs, self.in_channels))

    def _fusions(self) -> List[Tuple[str, nn.Sequential]]:
        """``(fusion, transform)`` in the order they are applied."""
        return [(f, getattr(self, f'{f}_conv')) for f in FUSION_TYPES if f in self.fusion_types]

    # -- the unified form -------------------------------------------------------------------------
    def graph_operator(self, x: Tensor) -> RankOneOperator:
        """``A = 1 s^T`` of input ``x`` ``(B, C, *S)``."""
        xf = flatten_map(x)
        keys = mask_logits(self.conv_mask, xf) if self.pooling_type == 'att' else to_tokens(xf)
        return self.graph(to_tokens(xf), keys, x.shape[2:])

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        """``Z = X`` in token layout (a view)."""
        return to_tokens(flatten_map(x))

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        """GC's filter weights are its transforms, which hold a norm and an activation (and ``channel_mul`` a sigmoid
        gate): not linear maps, so there is no frequency response to read off them (``tools/analysis/spectrum.py``
        reports this ValueError and still analyses the affinity)."""
        raise ValueError('GCBlock: its filter weight, the transform conv -> norm -> act -> conv of the pooled context, '
                         'is not a linear map: it has no frequency response')

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S)``: the fusions of ``F(A, X) = A X W`` into ``X``, in mmcv's order. Every row of
        ``A X`` is the context ``s^T X`` (:meth:`RankOneOperator.context`), so each transform maps that one row,
        ``(B, C, 1, 1)``, and the result broadcasts over the positions (no ``N`` copies, forward or backward)."""
        self.check_input(x)
        context = from_tokens(self.graph_operator(x).context(self.node_features(self, x)))  # (B, C, 1, 1)
        out = flatten_map(x)
        for fusion, transform in self._fusions():
            term = transform(context)
            out = out * torch.sigmoid(term) if fusion == 'channel_mul' else out + term
        return out.reshape(x.shape)

    # -- init and checkpoints ----------------------------------------------------------------------
    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        """The last convolution of each transform (zero at init: ``channel_add`` adds 0, ``channel_mul``
        multiplies by ``sigmoid(0) = 1/2``)."""
        return [transform[-1] for _, transform in self._fusions()]

    def init_weights(self) -> None:
        """mmcv's ``ContextBlock.reset_parameters``: ``conv_mask`` Kaiming normal (fan in), the last convolution of
        each transform zero (weight and bias); with an ``init_cfg`` mmengine's initialisation runs instead."""
        if self.init_cfg:
            super().init_weights()
            return
        if self.pooling_type == 'att':
            kaiming_init(self.conv_mask, mode='fan_in')
        for layer in self.output_layers():
            constant_init(layer, val=0)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, pooling_type={self.pooling_type!r}, '
                f'fusion_types={self.fusion_types}')
