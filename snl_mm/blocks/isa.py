"""ISA: the interlaced sparse self-attention block of Huang et al. 2019, laid out as mmsegmentation's ``ISAHead``."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor

from snl_mm.graph import InterlacedAffinity, InterlacedOperator, graph_filter
from snl_mm.graph.interlaced import (GroupAttentionOperator, check_down_factor, check_rank, crop_cells, gather_groups,
                                     pad_to_cells, regroup, scatter_groups)
from snl_mm.registry import ROOT_MODELS
from .ann import check_fusion
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, is_plain_pointwise, flat_norm_cfg, flatten_map, from_tokens, to_tokens

# one call each in a torch.fx graph, as in snl_mm.graph.interlaced (fx patches the names where they are looked up)
for _name in ('pad_to_cells', 'gather_groups', 'regroup', 'scatter_groups', 'crop_cells'):
    torch.fx.wrap(_name)


class _Relation(nn.Module):
    """One relation of ISA, mmsegmentation's ISA ``SelfAttentionBlock``: ``key_project`` and ``query_project``
    (two ``ConvModule`` each: 1x1 conv, norm, act), ``value_project`` (a 1x1 conv with bias, ``C -> C``) and
    ``output_project`` (``ConvModule``, ``C -> C``)."""

    def __init__(self, block: 'ISABlock'):
        super().__init__()
        c, cs = block.in_channels, block.inner_channels
        self.key_project = nn.Sequential(block.conv_module(c, cs), block.conv_module(cs, cs))
        self.query_project = nn.Sequential(block.conv_module(c, cs), block.conv_module(cs, cs))
        self.value_project = block.pointwise(c, c)
        self.output_project = block.conv_module(c, c)


@ROOT_MODELS.register_module()
class ISABlock(NonlocalBase):
    """Interlaced sparse self-attention: a long-range relation, then a short-range one, each within groups.

    The map is zero-padded to whole cells of ``down_factor`` positions per axis (``pad // 2`` before, the rest
    after, as mmsegmentation) and its positions are grouped twice (:mod:`snl_mm.graph.interlaced`): the long-range
    groups hold the positions at one offset of every cell, the short-range groups the positions of one cell. Each
    relation is ``Z' = act(norm(W (A V)))`` with ``A = softmax(Q K^T / sqrt(Cs))`` within the groups
    (``Q, K``: two 1x1 conv-norm-act layers each, ``Cs`` channels; ``V``: a 1x1 conv, ``C`` channels; ``W``:
    ``output_project``); the short-range relation runs on the long-range one's output, and the padding is cropped:
    ``R = crop(L(G(pad(X))))``. In the unified form each relation is ``F(A, Z) = A Z W`` on a block-sparse graph
    ``D^-1 (G . M)`` over the padded grid (``G`` the same-group mask), computed as attention batched over the
    groups (:func:`~snl_mm.graph.interlaced.group_matmul`): memory ``O(N n)`` for groups of ``n`` positions, never
    ``N x N``. The value and output projections (plain 1x1 convolutions, linear, and the rows of ``A`` sum to one)
    run as one convolution ``W_v W`` before the attention, one ``C x C`` convolution of the map fewer per relation
    than mmsegmentation's.

    Fusions: ``'residual'`` (default) ``Y = X + norm(W_o R)`` with ``out_conv`` a 1x1 conv and a norm, zero at init
    (the identity, for insertion anywhere); ``'concat'``, mmsegmentation's ``ISAHead``, ``Y = out_conv(cat(R, X))``
    with ``out_conv`` a ``ConvModule`` (``2C -> C``, norm, act), which computes mmsegmentation's numbers given the
    same state dict.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``.
        reduction (int): ``Cs = C // reduction`` query/key channels. Default: 2 (mmsegmentation's ISANet:
            ``isa_channels=256`` for ``channels=512``).
        inner_channels (int, optional): ``Cs`` directly.
        down_factor (int | sequence[int]): the cell size, one int for every axis or one per axis. Default: 8
            (mmsegmentation's ``(8, 8)``). The grouping is defined per axis, so an int serves 1D, 2D and 3D maps; a
            tuple fixes the rank to its length.
        fusion (str): ``'residual'`` or ``'concat'`` (above).
        conv_cfg (dict, optional): config of the 1x1 convolutions.
        norm_cfg (dict, optional): the norm of every ``ConvModule`` and of the residual output (zero at init).
            Default: ``dict(type='BN')``.
        act_cfg (dict, optional): the activation of the projections, of ``output_project`` and of the concat
            ``out_conv`` (mmsegmentation's ``act_cfg``); the residual output has none. Default: ``dict(type='ReLU')``.
        init_cfg (dict, optional): mmengine init config.

    Shapes: input and output ``(B, C, *S)``, any sizes; ``affinity(x)``: ``(B, N, N)``, the long-range relation's
    weights between the map's positions (``graph_operator(x).dense()``: its graph over the padded grid,
    ``(B, N_pad, N_pad)``, ``N_pad = prod(ceil(S / l) l)``).

    Checkpoint keys (mmsegmentation's ``ISAHead``): ``global_relation`` and ``local_relation``, each with
    ``key_project.{0,1}``, ``query_project.{0,1}`` (``ConvModule``: ``.conv``, ``.bn``), ``value_project`` (a
    conv) and ``output_project`` (``ConvModule``); ``out_conv`` (``ConvModule``: ``2C -> C`` with
    ``fusion='concat'``, ``C -> C`` with ``'residual'``). 1x1 kernels of any rank load.
    """

    _abbr_ = 'isa_block'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 down_factor: Union[int, Sequence[int]] = 8,
                 fusion: str = 'residual',
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: ConfigType = None):
        super().__init__(in_channels, reduction, inner_channels, conv_cfg, norm_cfg, act_cfg, init_cfg)
        self.down_factor = check_down_factor(down_factor, 'ISABlock')
        self.fusion = check_fusion(fusion, 'ISABlock')
        self.spatial_ranks = (1, 2, 3) if isinstance(self.down_factor, int) else (len(self.down_factor), )
        self.graph = InterlacedAffinity(self.down_factor, 'long')
        self.local_graph = InterlacedAffinity(self.down_factor, 'short')
        self.global_relation = _Relation(self)
        self.local_relation = _Relation(self)
        if self.fusion == 'residual':
            self.out_conv = ConvModule(in_channels, in_channels, 1, conv_cfg=conv_cfg,
                                       norm_cfg=flat_norm_cfg(norm_cfg), act_cfg=None)
        else:
            self.out_conv = self.conv_module(2 * in_channels, in_channels)
        self.init_weights()

    def conv_module(self, in_channels: int, out_channels: int) -> ConvModule:
        """1x1 conv, norm, act (mmsegmentation's ``ConvModule`` with the block's configs)."""
        return ConvModule(in_channels, out_channels, 1, conv_cfg=self.conv_cfg, norm_cfg=flat_norm_cfg(self.norm_cfg),
                          act_cfg=self.act_cfg)

    def check_input(self, x: Tensor) -> Tuple[int, ...]:
        spatial = super().check_input(x)
        if spatial:
            check_rank(self.down_factor, len(spatial), 'ISABlock')
        return spatial

    # -- the unified form -------------------------------------------------------------------------
    def filter_units(self) -> Sequence[nn.Module]:
        """The two relations, long-range first."""
        return [self.global_relation, self.local_relation]

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        """``Z = X W_v`` of a map or batch of groups ``x`` ``(B, C, *)``."""
        return to_tokens(unit.value_project(flatten_map(x)))

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        """``W``: the relation's ``output_project`` (conv, norm, act)."""
        return [lambda t: unit.output_project(from_tokens(t))]

    def output_norm(self, unit: nn.Module):
        return None, None

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        """Residual fusion: ``out_conv``'s norm (its conv without one); the concat fusion has none."""
        if self.fusion != 'residual':
            return []
        return [self.out_conv.norm if self.out_conv.with_norm else self.out_conv.conv]

    def relate(self, relation: nn.Module, groups: Tensor) -> Tensor:
        """One relation on a batch of groups ``(B G, C, n, 1)``: softmax attention within each group (batched over the
        groups, :func:`~snl_mm.graph.interlaced.group_matmul`) of the value projection, and the output projection;
        ``(B G, C, n, 1)``. With plain 1x1 convolutions the two projections run as one before the attention."""
        g = flatten_map(groups)
        op = GroupAttentionOperator(to_tokens(relation.query_project(g)), to_tokens(relation.key_project(g)),
                                    'inv_sqrt')
        value, out = relation.value_project, relation.output_project
        if not (is_plain_pointwise(value) and is_plain_pointwise(out.conv) and out.order == ('conv', 'norm', 'act')):
            return graph_filter(op, self.node_features(relation, g), self.filter_spec, self.filter_weights(relation))
        # A (X W_v + b_v) W_o = A (X W_v W_o + b_v W_o): the value and output convolutions are one product before the
        # attention (A is linear, its rows sum to one), one C x C convolution of the map fewer
        w_o = out.conv.weight.flatten(1)
        weight = torch.matmul(w_o, value.weight.flatten(1))
        bias = None if value.bias is None else torch.matmul(w_o, value.bias)
        if out.conv.bias is not None:
            bias = out.conv.bias if bias is None else bias + out.conv.bias
        z = to_tokens(F.conv2d(g, weight[..., None, None], bias))
        y = from_tokens(op.matmul(z))  # channel-major: the attention returns a view of (B G, C, n)
        if out.with_norm:
            y = out.norm(y)
        return out.activate(y) if out.with_activation else y

    def relations(self, x: Tensor) -> Tensor:
        """``crop(L(G(pad(X))))`` ``(B, C, *S)``: three permutations of the map, as mmsegmentation's."""
        f = self.down_factor
        groups = self.relate(self.global_relation, gather_groups(pad_to_cells(x, f), f, 'long'))
        groups = self.relate(self.local_relation, regroup(groups, x, f))
        return crop_cells(scatter_groups(groups, x, f, 'short'), x, f)

    def graph_operator(self, x: Tensor) -> InterlacedOperator:
        """The long-range relation's graph on the padded map of ``x`` (for analysis: the forward pass runs on the
        batch of groups)."""
        padded = pad_to_cells(x, self.down_factor)
        flat = flatten_map(padded)
        q = to_tokens(self.global_relation.query_project(flat))
        k = to_tokens(self.global_relation.key_project(flat))
        return self.graph(q, k, padded.shape[2:])

    def affinity(self, x: Tensor) -> Tensor:
        """The long-range relation's weights between the positions of ``x``, ``(B, N, N)`` (float32 at least, for
        analysis and pictures): its graph on the padded map, restricted to the map's own positions (the weights on
        padding slots are left out; a map of whole cells has none)."""
        self.check_input(x)
        a = self.graph_operator(x).dense()
        padded = pad_to_cells(x[:1, :1], self.down_factor)
        positions = torch.arange(padded.numel(), device=x.device).reshape(padded.shape)
        index = crop_cells(positions, x, self.down_factor).flatten()
        return a[:, index][:, :, index]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S)``."""
        self.check_input(x)
        context = self.relations(x)
        if self.fusion == 'residual':
            return x + self.out_conv(flatten_map(context)).reshape(x.shape)
        return self.out_conv(torch.cat([flatten_map(context), flatten_map(x)], dim=1)).reshape(x.shape)

    # -- init -------------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Residual fusion: convolutions ``N(0, 0.01)``, norms 1 and ``out_conv``'s norm zero (the identity).
        Concat fusion: mmsegmentation's initialisation (``ConvModule``'s own, ``value_project`` PyTorch's)."""
        if self.init_cfg:
            super().init_weights()
            return
        if self.fusion == 'concat':
            self.init_upstream_start([self.global_relation.value_project, self.local_relation.value_project])
            return
        self.init_identity_start(self)

    def spectral_form(self) -> Dict[str, str]:
        """Two relations in sequence, each ``A Z W`` on its block-sparse graph (long-range, then short-range)."""
        form = super().spectral_form()
        form['affinity'] = f'{self.graph.notation}, then {self.local_graph.notation}'
        return form

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, down_factor={self.down_factor}, fusion={self.fusion!r}'
