"""CC: the criss-cross attention block of Huang et al. 2019 (CCNet; paper Appendix B.5)."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import Scale
from torch import Tensor

from snl_mm.graph import CRISS_CROSS_RANKS, CrissCross, CrissCrossOperator, criss_cross_attention
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import check_int, check_positive_int
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, flatten_map, from_tokens, pointwise_tokens, to_tokens

# one call in a torch.fx graph, as in snl_mm.graph.criss_cross (fx patches the name where it is looked up)
torch.fx.wrap('criss_cross_attention')


@ROOT_MODELS.register_module()
class CCBlock(NonlocalBase):
    """Criss-cross attention block: ``Y = X + gamma * (A V)``, applied ``recurrence`` times.

    Each position attends, with one joint softmax, to the positions that share its row and column (2D) or its
    row, column and time line (3D), itself counted once: ``A_ij = softmax_{j in cross(i)}(q_i . k_j)`` with
    query and key ``q, k = query_conv(X), key_conv(X)`` (``key_channels``) and value ``V = value_conv(X)``
    (``C`` channels). In the unified form (paper Eq. 4, second Chebyshev term) this is
    ``F(A, X) = A X W`` on the masked, random-walk normalised graph ``A = D^-1 (C o M)``, with
    ``W = gamma W_v``. A learned scalar ``gamma`` (zero at init) replaces the output norm.

    ``recurrence = R`` applies the same block (shared weights) ``R`` times, each with its own affinity, as
    CCNet's recurrent criss-cross attention (``R = 2`` covers every pair of positions in 2D). The attention is
    computed line by line, ``O(N (H + W [+ T]))``, never ``N x N``, in pure PyTorch (no compiled op), with the
    softmax in float32 under autocast. All applications run on the map in token layout ``(B, *S, C)``
    (transposed once on the way in and once on the way out): the three projections are one matrix product,
    and ``X + gamma (A V)`` is one fused operation (:func:`snl_mm.graph.criss_cross_attention`). In 2D one
    application computes what mmcv's ``CrissCrossAttention`` computes (the centre is excluded from the column
    and kept in the row, as there), and mmcv's state dict loads unchanged.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, H, W)`` or ``(B, C, T, H, W)``. A 1D input
            ``(B, C, L)`` raises a ValueError at forward (criss-cross needs rows and columns).
        reduction (int): ``key_channels = max(1, C // reduction)``. Default: 8 (CCNet's ``C / 8``).
        key_channels (int, optional): query/key channels directly.
        recurrence (int): applications of the block, ``>= 1``. Default: 2 (CCNet's ``R = 2``).
        conv_cfg (dict, optional): 1x1 convolution config (``nn.Conv2d`` on the flattened map).
        norm_cfg (None): CC has no output norm (``gamma`` instead); only None is accepted.
        act_cfg (None): CC has no output activation; only None is accepted.
        init_cfg (dict, optional): mmengine init config.

    Shapes: input and output ``(B, C, *S)``, ``S = (H, W)`` or ``(T, H, W)``; ``affinity(x)``:
    ``(B, N, N)`` (that of the first application), zero outside the criss-cross.

    Checkpoint keys (mmcv's ``CrissCrossAttention``): ``query_conv``, ``key_conv`` (``C -> key_channels``),
    ``value_conv`` (``C -> C``), all with bias, and ``gamma.scale``.
    """

    _abbr_ = 'cc_block'
    _projection_names = ('query_conv', 'key_conv', 'value_conv')
    node_feature = 'X'
    spatial_ranks: Tuple[int, ...] = CRISS_CROSS_RANKS

    def __init__(self,
                 in_channels: int,
                 reduction: int = 8,
                 key_channels: Optional[int] = None,
                 recurrence: int = 2,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = None,
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        if norm_cfg is not None:
            raise ValueError('CCBlock: norm_cfg must be None: criss-cross attention has no output norm '
                             f'(a learned scalar gamma, zero at init, scales its output), got {norm_cfg!r}')
        if act_cfg is not None:
            raise ValueError(f'CCBlock: act_cfg must be None: criss-cross attention has no output '
                             f'activation, got {act_cfg!r}')
        if key_channels is None:
            check_positive_int(reduction, 'reduction', 'CCBlock')
            if isinstance(in_channels, int):
                key_channels = max(1, in_channels // reduction)
        else:
            check_positive_int(key_channels, 'key_channels', 'CCBlock')
        check_int(recurrence, 'recurrence', 'CCBlock', note=' (CCNet uses 2)')
        super().__init__(in_channels, reduction, key_channels, conv_cfg, None, None, init_cfg)
        self.key_channels = self.inner_channels
        self.recurrence = recurrence
        self.query_conv = self.pointwise(in_channels, self.key_channels)
        self.key_conv = self.pointwise(in_channels, self.key_channels)
        self.value_conv = self.pointwise(in_channels, in_channels)
        self.gamma = Scale(0.0)
        self.graph = CrissCross()
        self.init_weights()

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        """``gamma``: zero at init, the block is the identity."""
        return [self.gamma]

    def check_input(self, x: Tensor) -> Tuple[int, ...]:
        if isinstance(x, Tensor) and x.dim() - 2 not in self.spatial_ranks:
            raise ValueError(
                f'CCBlock attends along rows and columns: it expects (B, C, H, W) or (B, C, T, H, W) input '
                f'(len(S) in {self.spatial_ranks}), got shape {tuple(x.shape)}')
        return super().check_input(x)

    def graph_operator(self, x: Tensor) -> CrissCrossOperator:
        """The criss-cross affinity of input ``x`` ``(B, C, *S)``."""
        grid = x.movedim(1, x.dim() - 1)
        qk = pointwise_tokens([self.query_conv, self.key_conv], grid)
        qk = qk.reshape(x.shape[0], -1, 2 * self.key_channels)
        q, k = qk.split(self.key_channels, dim=-1)
        return self.graph(q, k, x.shape[2:])

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        """``Z = X``: the input itself (Table 1); the value projection is part of ``W``."""
        return to_tokens(flatten_map(x))

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        """``W = gamma W_v``: ``A (X W_v) = (A X) W_v`` for a row-stochastic ``A``, bias included."""
        return [lambda t: self.gamma(self.value_conv(from_tokens(t)))]

    def _attend(self, grid: Tensor) -> Tensor:
        """One application on a grid in token layout ``(B, *S, C)``: ``grid + gamma (A V)``."""
        qkv = pointwise_tokens([self.query_conv, self.key_conv, self.value_conv], grid)
        return criss_cross_attention(qkv, self.key_channels, self.gamma.scale, residual=grid)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S)`` with ``S = (H, W)`` or ``(T, H, W)``.

        The unified form of the base (``X + F(A, X)``, :meth:`NonlocalBase.forward`) applied ``recurrence`` times,
        evaluated fused: the value projection is applied before the attention, and projections, attention,
        ``gamma`` and residual run in token layout in one operation per application.
        """
        self.check_input(x)
        # all applications run in token layout, where the lines of the grid are matrices BLAS reads in
        # place: the input is transposed once and the output once
        # (non-negative dimensions: the TorchScript ONNX exporter writes a negative one into Transpose's perm)
        grid = x.movedim(1, x.dim() - 1).contiguous()
        for _ in range(self.recurrence):
            grid = self._attend(grid)
        return grid.movedim(grid.dim() - 1, 1).contiguous()

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, key_channels={self.key_channels}, ' \
               f'recurrence={self.recurrence}'
