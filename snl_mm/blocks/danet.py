"""DANet's two attention modules (Fu et al. 2019), laid out as mmsegmentation's ``PAM`` and ``CAM``: position
attention, a graph over the positions, and channel attention, a graph over the channels."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import Scale
from torch import Tensor

from snl_mm.graph import Affinity, ChannelGraph, ChannelGraphOperator, GraphOperator
from snl_mm.graph.channel_graph import channel_matmul
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import check_positive_int
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, flatten_map, from_tokens, to_tokens

# one call in a torch.fx graph, as in snl_mm.graph.channel_graph (fx patches the name where it is looked up)
torch.fx.wrap('channel_matmul')


def _no_norm_or_act(owner: str, norm_cfg: ConfigType, act_cfg: ConfigType) -> None:
    """DANet's modules scale their output by ``gamma`` (zero at init) and have no norm or activation."""
    if norm_cfg is not None:
        raise ValueError(f'{owner}: norm_cfg must be None: the module has no output norm (a learned scalar gamma, '
                         f'zero at init, scales its output), got {norm_cfg!r}')
    if act_cfg is not None:
        raise ValueError(f'{owner}: act_cfg must be None: the module has no output activation, got {act_cfg!r}')


@ROOT_MODELS.register_module()
class PAMBlock(NonlocalBase):
    """Position attention module: ``Y = X + gamma A V``, ``A = softmax_j(q_i . k_j)`` (no scale).

    Queries and keys are 1x1 projections of ``X`` to ``key_channels`` (``C / 8``), the values ``V`` a 1x1
    projection to ``C`` channels, all with bias. In the unified form (paper Eq. 4, second Chebyshev term) this is
    ``F(A, Z) = A Z W`` with the softmax affinity ``A = D_M^-1 M``, ``M = exp(Q K^T)``, node features
    ``Z = V = X W_v`` and the scalar weight ``W = gamma`` (zero at init: the block starts as the identity).
    ``A`` is never formed: :class:`~snl_mm.graph.Affinity` (``exp_dot``, ``random_walk``, scale 1) gives a
    :class:`~snl_mm.graph.SoftmaxOperator`, computed by fused attention, on the CPU over query chunks (keys
    narrower than the values, :mod:`snl_mm.graph.chunked_attention`): memory ``O(N C)`` instead of
    mmsegmentation's two ``N x N`` float32 maps (4.3 GB each at 128 x 256).

    With the same state dict it computes what mmsegmentation's ``PAM(C, key_channels)`` (``da_head.py``) computes,
    for inputs of any rank.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, ``S`` of rank 1, 2 or 3.
        reduction (int): ``key_channels = max(1, C // reduction)``. Default: 8 (DANet's ``C / 8``: 64 of 512).
        key_channels (int, optional): query/key channels directly (DAHead's ``pam_channels``).
        conv_cfg (dict, optional): 1x1 convolution config (``nn.Conv2d`` on the flattened map).
        norm_cfg (None): PAM has no output norm (``gamma`` instead); only None is accepted.
        act_cfg (None): PAM has no output activation; only None is accepted.
        init_cfg (dict, optional): mmengine init config.

    Shapes: input and output ``(B, C, *S)``; ``affinity(x)``: ``(B, N, N)``, ``N = prod(S)``.

    Checkpoint keys (mmsegmentation's ``PAM``): ``query_project``, ``key_project`` (``C -> key_channels``),
    ``value_project`` (``C -> C``), each with bias, and ``gamma.scale``.
    """

    _abbr_ = 'pam_block'
    _projection_names = ('query_project', 'key_project', 'value_project')

    def __init__(self,
                 in_channels: int,
                 reduction: int = 8,
                 key_channels: Optional[int] = None,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = None,
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        _no_norm_or_act('PAMBlock', norm_cfg, act_cfg)
        if key_channels is None:
            check_positive_int(reduction, 'reduction', 'PAMBlock')
            check_positive_int(in_channels, 'in_channels', 'PAMBlock')
            key_channels = max(1, in_channels // reduction)
        else:
            check_positive_int(key_channels, 'key_channels', 'PAMBlock')
        super().__init__(in_channels, reduction, key_channels, conv_cfg, None, None, init_cfg)
        self.key_channels = self.inner_channels
        self.query_project = self.pointwise(in_channels, self.key_channels)
        self.key_project = self.pointwise(in_channels, self.key_channels)
        self.value_project = self.pointwise(in_channels, in_channels)
        self.gamma = Scale(0.0)
        self.graph = Affinity(kernel='exp_dot', normalize='random_walk', scale=1.0)
        self.init_weights()

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        """``gamma``: zero at init, the block is the identity."""
        return [self.gamma]

    def graph_operator(self, x: Tensor) -> GraphOperator:
        """``softmax(Q K^T)`` of input ``x`` ``(B, C, *S)``, never formed."""
        xf = flatten_map(x)
        return self.graph(to_tokens(self.query_project(xf)), to_tokens(self.key_project(xf)), x.shape[2:])

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        """``Z = V``, the value projection (bias included: ``A`` is row-stochastic)."""
        return to_tokens(self.value_project(flatten_map(x)))

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        """``W = gamma``."""
        return [lambda t: self.gamma(from_tokens(t))]

    def output_norm(self, unit: nn.Module):
        return None, None

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, key_channels={self.key_channels}'


@ROOT_MODELS.register_module()
class CAMBlock(NonlocalBase):
    """Channel attention module: ``Y = X + gamma X A^T`` over a graph of channels (token layout ``X``: ``N x C``).

    The vertices are the ``C`` channels, each with its map over the ``N`` positions as features (the rows of
    ``X^T``); the edges are the energies ``E = X^T X`` (``C x C``, sums over positions) and the affinity is
    ``A = softmax_d(max_d E_cd - E_cd)`` (:class:`~snl_mm.graph.ChannelGraph`, as mmsegmentation computes it;
    mathematically ``softmax_d(-E_cd)``). In the unified form (paper Eq. 4, second Chebyshev term) this is
    ``F(A, Z) = A Z W`` on that graph with ``Z = X^T`` and the scalar weight ``W = gamma`` (zero at init: the
    block starts as the identity). No projections; memory ``O(C^2 + N C)``. The energies and the softmax run in
    float32 under autocast.

    With the same state dict it computes what mmsegmentation's ``CAM`` (``da_head.py``) computes, for inputs of any
    rank.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, ``S`` of rank 1, 2 or 3.
        conv_cfg (None): CAM has no convolutions; accepted for the package's argument style and unused.
        norm_cfg (None): CAM has no output norm (``gamma`` instead); only None is accepted.
        act_cfg (None): CAM has no output activation; only None is accepted.
        init_cfg (dict, optional): mmengine init config.

    Shapes: input and output ``(B, C, *S)``; ``affinity(x)``: ``(B, C, C)``.

    Checkpoint keys (mmsegmentation's ``CAM``): ``gamma.scale``.
    """

    _abbr_ = 'cam_block'
    vertices = 'C'
    node_feature = 'X^T'

    def __init__(self,
                 in_channels: int,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = None,
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        _no_norm_or_act('CAMBlock', norm_cfg, act_cfg)
        super().__init__(in_channels, 1, None, conv_cfg, None, None, init_cfg)
        self.gamma = Scale(0.0)
        self.graph = ChannelGraph(negate=True)
        self.init_weights()

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        """``gamma``: zero at init, the block is the identity."""
        return [self.gamma]

    def graph_operator(self, x: Tensor) -> ChannelGraphOperator:
        """The ``(B, C, C)`` channel graph of input ``x`` ``(B, C, *S)``."""
        t = to_tokens(flatten_map(x))
        return self.graph(t, t, x.shape[2:])

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        """``Z = X^T``: the input itself, in token layout (the operator acts on its channels)."""
        return to_tokens(flatten_map(x))

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        """``W = gamma``."""
        return [lambda t: self.gamma(from_tokens(t))]

    def output_norm(self, unit: nn.Module):
        return None, None

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S)``: the unified form of the base (``X + F(A, Z)``, :meth:`NonlocalBase.forward`)
        evaluated as ``X + (gamma A) Z``: the scalar weight multiplies the ``C x C`` affinity instead of the
        ``C x N`` product (one pass over the map fewer, and no ``C x N`` tensor kept for its gradient)."""
        self.check_input(x)
        z = self.node_features(self, x)
        op = self.graph_operator(x)
        return self.residual(x, from_tokens(channel_matmul(self.gamma.scale * op.matrix, z)), None, None)

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}'
