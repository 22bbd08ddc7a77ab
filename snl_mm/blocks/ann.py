"""ANN: the asymmetric non-local blocks of Zhu et al. 2019 (APNB, AFNB), laid out as mmsegmentation's ``ANNHead``."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import constant_init
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from snl_mm.graph import POOL_SCALES, AnchorOperator, PyramidAnchors, graph_filter
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import check_positive_int
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, is_plain_pointwise, flat_norm_cfg, flatten_map, from_tokens, to_tokens


@torch.fx.wrap
def key_map(x: Tensor, context: Optional[Tensor]) -> Tensor:
    """The map keys and values come from: ``context``, or ``x`` when None (one call in a ``torch.fx`` graph, whose
    placeholder for an optional input is never None while it traces)."""
    return x if context is None else context


#: how the attended context meets the input: ``X + norm(context)`` (identity at init) or mmsegmentation's
#: ``bottleneck(cat(context, X))``
FUSIONS = ('residual', 'concat')


def check_fusion(fusion: str, owner: str) -> str:
    if fusion not in FUSIONS:
        raise ValueError(f"{owner}: fusion must be one of {FUSIONS} ('residual': X + norm(W A Z), the identity at "
                         f"init; 'concat': mmsegmentation's bottleneck(cat(context, X))), got {fusion!r}")
    return fusion


class _Stage(nn.Module):
    """One attention stage of mmsegmentation's ANN ``SelfAttentionBlock``: ``key_project``, ``query_project``
    (``ConvModule``: 1x1 conv, norm, act; the same module when shared), ``value_project`` and ``out_project``
    (1x1 convs with bias)."""

    def __init__(self, block: NonlocalBase, query_channels: int, key_channels: int, share_key_query: bool):
        super().__init__()
        cs = block.inner_channels
        self.key_project = block.projection(key_channels, cs)
        self.query_project = self.key_project if share_key_query else block.projection(query_channels, cs)
        self.value_project = block.pointwise(key_channels, cs)
        self.out_project = block.pointwise(cs, block.in_channels)


class PyramidNonlocal(NonlocalBase):
    """Base of ANN's blocks: queries attend to pyramid-pooled keys (:class:`~snl_mm.graph.PyramidAnchors`).

    ``Y = X + norm(sum_i W_i A_i Z_i)`` (``fusion='residual'``) or ``Y = bottleneck(cat(sum_i W_i A_i Z_i, X))``
    (``'concat'``, mmsegmentation's), one term per query scale ``i`` (a stage), ``A_i = R_i P`` over ``S``
    anchors, ``Z_i`` the value projection of the key map and ``W_i`` the stage's ``out_project``.
    Subclasses say where the keys come from.
    """

    share_key_query: bool = True
    #: whether the concat bottleneck has the activation (APNB's) or not (AFNB's)
    bottleneck_act: bool = True

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 context_channels: Optional[int] = None,
                 pool_scales: Sequence[int] = POOL_SCALES,
                 query_scales: Sequence[int] = (1, ),
                 fusion: str = 'residual',
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: ConfigType = None):
        super().__init__(in_channels, reduction, inner_channels, conv_cfg, norm_cfg, act_cfg, init_cfg)
        owner = type(self).__name__
        self.fusion = check_fusion(fusion, owner)
        if isinstance(query_scales, int) or not isinstance(query_scales, (tuple, list)) or not query_scales \
                or any(s != 1 or isinstance(s, bool) for s in query_scales):
            raise ValueError(
                f'{owner}: query_scales must be a non-empty tuple of 1s (one stage per entry; mmsegmentation\'s '
                f'default is (1,)), got {query_scales!r}: a query scale > 1 max-pools the queries, and '
                'mmsegmentation then reshapes their context to the unpooled map, which no input passes')
        try:
            self.graph = PyramidAnchors(pool_scales, scale='inv_sqrt')
        except ValueError as err:
            raise ValueError(f'{owner}: {err}') from err
        if context_channels is None:
            context_channels = in_channels
        self.context_channels = check_positive_int(context_channels, 'context_channels', owner,
                                                   note=' or None (in_channels)')
        self.pool_scales = self.graph.pool_scales
        self.query_scales = tuple(query_scales)
        self.stages = nn.ModuleList(
            _Stage(self, in_channels, context_channels, self.share_key_query) for _ in self.query_scales)
        if self.fusion == 'residual':
            self.norm = self.build_norm(in_channels)
        else:
            self.bottleneck = ConvModule(2 * in_channels, in_channels, 1, conv_cfg=conv_cfg,
                                         norm_cfg=flat_norm_cfg(norm_cfg),
                                         act_cfg=act_cfg if self.bottleneck_act else None)
        self.init_weights()

    def projection(self, in_channels: int, out_channels: int) -> ConvModule:
        """A key or query projection: 1x1 conv, norm, act (mmsegmentation's ``ConvModule``)."""
        return ConvModule(in_channels, out_channels, 1, conv_cfg=self.conv_cfg, norm_cfg=flat_norm_cfg(self.norm_cfg),
                          act_cfg=self.act_cfg)

    # -- the unified form -------------------------------------------------------------------------
    def filter_units(self) -> Sequence[nn.Module]:
        """The stages, one per query scale."""
        return list(self.stages)

    def stage_operator(self, stage: nn.Module, x: Tensor, feats: Tensor) -> AnchorOperator:
        """``A = R P`` of one stage: queries from ``x``, keys pooled from ``feats`` (both ``(B, *, *S)``)."""
        if self.share_key_query:
            q = k = to_tokens(stage.key_project(flatten_map(x)))
        else:
            q = to_tokens(stage.query_project(flatten_map(x)))
            k = to_tokens(stage.key_project(flatten_map(feats)))
        return self.graph(q, k, feats.shape[2:])

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        """``Z = X W_v`` of the key map ``x``, per position (pooled by the operator)."""
        return to_tokens(unit.value_project(flatten_map(x)))

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        return [lambda t: unit.out_project(from_tokens(t))]

    def output_norm(self, unit: nn.Module):
        return (self.norm if self.fusion == 'residual' else None), None

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        """Residual fusion: the norm (the stages' ``out_project`` without one); the concat fusion is not a
        residual and has none."""
        if self.fusion != 'residual':
            return []
        return [self.norm] if self.norm is not None else [stage.out_project for stage in self.stages]

    def anchor_values(self, stage: nn.Module, op: AnchorOperator, feats: Tensor) -> Tensor:
        """``P Z W = ((P X_c) W_v + b_v) W + b`` ``(B, S, C)``: the value and output projections of a stage applied to
        the ``S`` pooled anchors of the key map instead of its ``N`` positions. Exact: both are pointwise and linear,
        and the rows of ``P`` and of ``R`` sum to one (averages, softmax weights), so ``R P (X_c W_v + b_v) W =
        R ((P X_c) W_v + b_v) W``; it saves the value convolution over the map and the output convolution after the
        attention (``R`` then attends to ``C`` channels instead of ``Cs``)."""
        pooled = op.pool(to_tokens(flatten_map(feats)))
        values = F.linear(pooled, stage.value_project.weight.flatten(1), stage.value_project.bias)
        return F.linear(values, stage.out_project.weight.flatten(1), stage.out_project.bias)

    def attend(self, x: Tensor, feats: Tensor) -> Tensor:
        """The context ``sum_i W_i A_i Z_i`` ``(B, C, N, 1)`` of queries from ``x`` and keys from ``feats``: through
        the anchors (:meth:`anchor_values`) where the value and output projections are plain 1x1 convolutions, else
        as the graph filter on the node features of every position."""
        out = None
        for stage in self.stages:
            op = self.stage_operator(stage, x, feats)
            if is_plain_pointwise(stage.value_project) and is_plain_pointwise(stage.out_project):
                # channel-major: a (B, C, N, 1) view of tokens has channels-last strides, on which CPU batch
                # norm's backward is wrong (PyTorch 2.x)
                term = from_tokens(op.attend(self.anchor_values(stage, op, feats))).contiguous()
            else:
                term = graph_filter(op, self.node_features(stage, feats), self.filter_spec,
                                    self.filter_weights(stage))
            out = term if out is None else out + term
        return out

    def fuse(self, x: Tensor, context: Tensor) -> Tensor:
        """``X + norm(context)`` or ``bottleneck(cat(context, X))``, shaped as ``x``."""
        if self.fusion == 'residual':
            return self.residual(x, context, self.norm, None)
        return self.bottleneck(torch.cat([context, flatten_map(x)], dim=1)).reshape(x.shape)

    # -- init -------------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Residual fusion: projections ``N(0, 0.01)``, the output norm zero (the identity). Concat fusion:
        mmsegmentation's initialisation: ``ConvModule``'s own (Kaiming convs, unit norms), ``value_project``
        PyTorch's and ``out_project`` zero."""
        if self.init_cfg:
            super().init_weights()
            return
        if self.fusion == 'concat':
            self.init_upstream_start([stage.value_project for stage in self.stages])
            for stage in self.stages:
                constant_init(stage.out_project, 0)
            return
        self.init_identity_start(self.stages)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, pool_scales={self.pool_scales}, query_scales={self.query_scales}, '
                f'fusion={self.fusion!r}')


@ROOT_MODELS.register_module()
class APNBBlock(PyramidNonlocal):
    """Asymmetric pyramid non-local block: self-attention of every position to ``S`` pyramid-pooled anchors.

    ``Y = X + norm(W (R P) (X W_v))`` with ``R = softmax_S(Q (P K)^T / sqrt(Cs))``, ``Q = K = phi(X)`` (one
    projection for queries and keys: 1x1 conv, norm, ReLU), ``P`` adaptive average pooling at ``pool_scales``
    (``S = 110`` anchors of a 2D map), ``W_v`` the value and ``W`` the output projection. In the unified form
    (paper Eq. 4, second Chebyshev term) this is ``F(A, Z) = A Z W`` on ``A = R P``
    (:class:`~snl_mm.graph.PyramidAnchors`), computed as ``R ((P X) W_v W)``: the map is pooled to the ``S`` anchors
    and the value and output projections run on the anchors (exact: they are pointwise and linear, and the rows of
    ``P`` and ``R`` sum to one; :meth:`anchor_values`), then the queries attend to them: memory ``O(N S)``, never
    ``N x N``, and no value or output convolution over the ``N`` positions. Pooling is defined per axis, so any rank
    works (``S = 18`` anchors in 1D, ``756`` in 3D).

    ``fusion='concat'`` is mmsegmentation's ``APNB``: ``Y = bottleneck(cat(W (R P) (X W_v), X))`` with the
    bottleneck a ``ConvModule`` (``2C -> C``, norm, act); given the same state dict it computes mmsegmentation's
    numbers. mmsegmentation applies the shared projection twice per forward (for the queries and for the keys);
    the block applies it once, so in training its norm's running statistics take one update per step where
    mmsegmentation's take two (the outputs are the same).

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, any rank 1-3.
        reduction (int): ``Cs = C // reduction`` channels of queries, keys and values. Default: 2
            (mmsegmentation's ANNHead: ``project_channels=256`` for ``channels=512``).
        inner_channels (int, optional): ``Cs`` directly.
        pool_scales (sequence[int]): adaptive pooling scales of the keys and values. Default: ``(1, 3, 6, 8)``.
        query_scales (sequence[int]): one stage (own projections, contexts summed) per entry; only 1 is defined
            (mmsegmentation's query scales > 1 fail in its forward). Default: ``(1,)``.
        fusion (str): ``'residual'`` (default: ``X + norm(...)``, the identity at init, for insertion anywhere) or
            ``'concat'`` (mmsegmentation's bottleneck; not the identity at init).
        conv_cfg (dict, optional): config of the 1x1 convolutions.
        norm_cfg (dict, optional): the norm of the query/key projection, of the residual output (zero at init)
            and of the concat bottleneck. Default: ``dict(type='BN')``.
        act_cfg (dict, optional): the activation of the query/key projection and of the concat bottleneck
            (mmsegmentation's ``act_cfg``); the residual output has none. Default: ``dict(type='ReLU')``.
        init_cfg (dict, optional): mmengine init config.

    Shapes: input and output ``(B, C, *S)``; ``affinity(x)``: ``(B, N, N)`` (of the first stage).

    Checkpoint keys (mmsegmentation's ``APNB``, loaded strictly with ``fusion='concat'``): ``stages.{i}.key_project``
    and ``stages.{i}.query_project`` (one ``ConvModule``, ``.conv`` and ``.bn``, under both names as in
    mmsegmentation), ``stages.{i}.value_project``, ``stages.{i}.out_project`` (1x1 convs), ``bottleneck``
    (``ConvModule``); the residual fusion has ``norm`` instead of ``bottleneck``. 1x1 kernels of any rank load.
    """

    _abbr_ = 'apnb_block'
    share_key_query = True
    bottleneck_act = True

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 pool_scales: Sequence[int] = POOL_SCALES,
                 query_scales: Sequence[int] = (1, ),
                 fusion: str = 'residual',
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: ConfigType = None):
        super().__init__(in_channels, reduction, inner_channels, None, pool_scales, query_scales, fusion, conv_cfg,
                         norm_cfg, act_cfg, init_cfg)

    def graph_operator(self, x: Tensor) -> AnchorOperator:
        """The affinity of the first stage on input ``x`` ``(B, C, *S)``."""
        return self.stage_operator(self.stages[0], x, x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S)``."""
        self.check_input(x)
        return self.fuse(x, self.attend(x, x))


@ROOT_MODELS.register_module()
class AFNBBlock(PyramidNonlocal):
    """Asymmetric fusion non-local block: the positions of a map attend to the pyramid-pooled anchors of another.

    ``Y = X + norm(W (R P) (X_c W_v))`` with ``R = softmax_S(Q (P K)^T / sqrt(Cs))``, queries ``Q = theta(X)`` from
    the input (the high-level map in ANN) and keys ``K = phi(X_c)`` and values ``X_c W_v`` from the context map
    ``X_c`` (the low-level map), each projection a 1x1 conv, norm and ReLU (the values: a 1x1 conv). ``P`` pools the
    context map at ``pool_scales``, which may have another size (and channel count) than ``X``; called with ``x``
    alone the block attends to ``x`` itself, so that it works as a plugin anywhere. In the unified form this is
    ``F(A, Z) = A Z W`` on the ``N x N_c`` graph ``A = R P`` with node features ``Z = X_c W_v``, computed as
    ``R ((P X_c) W_v W)`` (the projections on the ``S`` anchors) in ``O(N S)`` memory.

    ``fusion='concat'`` is mmsegmentation's ``AFNB``: ``Y = bottleneck(cat(W (R P) Z, X))`` with the bottleneck a
    ``ConvModule`` (``2C -> C``, norm, no act); given the same state dict it computes mmsegmentation's numbers.

    Args:
        in_channels (int): channels ``C`` of the input (query) map ``(B, C, *S)``, any rank 1-3.
        reduction (int): ``Cs = C // reduction`` channels of queries, keys and values. Default: 2 (mmsegmentation's
            ANNHead fuses 2048 channels through ``project_channels=256``: ``inner_channels=256``).
        inner_channels (int, optional): ``Cs`` directly.
        context_channels (int, optional): channels of the context map ``X_c``. Default: ``in_channels``.
        pool_scales, query_scales, fusion, conv_cfg, norm_cfg, act_cfg, init_cfg: as :class:`APNBBlock` (the
            concat bottleneck has no activation, as mmsegmentation's ``AFNB``).

    Shapes: ``forward(x, context=None)``: ``x`` ``(B, C, *S)``, ``context`` ``(B, C_c, *S_c)`` (same batch), output
    ``(B, C, *S)``; ``affinity(x, context=None)``: ``(B, N, N_c)`` (of the first stage).

    Checkpoint keys (mmsegmentation's ``AFNB``, loaded strictly with ``fusion='concat'``): ``stages.{i}.key_project``,
    ``stages.{i}.query_project`` (``ConvModule``: ``.conv``, ``.bn``), ``stages.{i}.value_project``,
    ``stages.{i}.out_project`` (1x1 convs), ``bottleneck`` (``ConvModule``); the residual fusion has ``norm`` instead
    of ``bottleneck``. 1x1 kernels of any rank load.
    """

    _abbr_ = 'afnb_block'
    share_key_query = False
    bottleneck_act = False
    node_feature = 'X_c W_Z'

    def check_context(self, x: Tensor, context: Optional[Tensor]) -> Tensor:
        """The key map: ``context``, or ``x`` when None (checked as the input is)."""
        if is_fx_symbolic_tracing():
            return key_map(x, context)
        if context is None:
            if self.context_channels != self.in_channels:
                raise ValueError(f'AFNBBlock was built with context_channels={self.context_channels} != '
                                 f'in_channels={self.in_channels}: call it with its context map, block(x, context)')
            return x
        if not isinstance(context, Tensor) or context.dim() - 2 not in self.spatial_ranks \
                or context.shape[0] != x.shape[0] or context.shape[1] != self.context_channels:
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f'AFNBBlock expects a context map (B={x.shape[0]}, C_c={self.context_channels}, '
                             f'*S_c) with 1 to 3 spatial axes, got {shape}')
        return context

    def graph_operator(self, x: Tensor, context: Optional[Tensor] = None) -> AnchorOperator:
        """The affinity of the first stage: queries from ``x``, keys from ``context`` (``x`` when None)."""
        return self.stage_operator(self.stages[0], x, self.check_context(x, context))

    def affinity(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """The dense ``(B, N, N_c)`` affinity of the first stage, for analysis."""
        self.check_input(x)
        return self.graph_operator(x, context).dense()

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``(B, C, *S) -> (B, C, *S)``, the keys and values from ``context`` ``(B, C_c, *S_c)`` (``x`` when None)."""
        self.check_input(x)
        feats = self.check_context(x, context)
        return self.fuse(x, self.attend(x, feats))

    def spectral_form(self) -> dict:
        form = super().spectral_form()
        form['edges'] = 'N x N_c'
        return form

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, context_channels={self.context_channels}'
