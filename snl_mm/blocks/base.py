"""The base every nonlocal block shares: the paper's unified form as a module.

A block is a graph and a filter (the paper's Sec. 2, Table 1): :meth:`NonlocalBase.graph_operator` turns the
input ``X`` into the affinity ``A`` (a :class:`~snl_mm.graph.GraphOperator`, never necessarily formed), each
filter unit turns ``X`` into node features ``Z`` and the Chebyshev filter ``F(A, Z) = sum_k T_k(A) Z W_k`` of the
block's :class:`~snl_mm.graph.FilterSpec` combines them (:func:`~snl_mm.graph.graph_filter`); the output is
``Y = X + act(norm(F(A, Z)))``. The base owns that forward pass, the dense :meth:`~NonlocalBase.affinity` for
analysis, the channel arguments, and the one initialisation that makes every unit start as the identity.
A block class supplies its projections, its affinity and its filter, and declares the columns of Table 1
(:attr:`~NonlocalBase.vertices`, :attr:`~NonlocalBase.node_feature`; the affinity's and the filter's
``notation``), so that :func:`snl_mm.blocks.spectral_table` prints the paper's table from the code.

One instance serves every rank (``(B, C, L)``, ``(B, C, H, W)``, ``(B, C, T, H, W)``): the 1x1 projections run on
the flattened map ``(B, C, N, 1)`` (:mod:`snl_mm.blocks.tokens`). A checkpoint of a rank-specific module
(``NonLocal3d``'s ``(C_out, C_in, 1, 1, 1)`` kernels, say) loads unchanged: 1x1 kernels of any rank are reshaped
to this layout when a state dict is loaded.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule, build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule, constant_init, normal_init
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from snl_mm.graph import FilterSpec, GraphOperator, graph_filter
from snl_mm.utils import check_positive_int
from .tokens import ConfigType, flat_norm_cfg

#: a filter weight: node signals in token layout ``(B, N, c)`` -> the block's output map ``(B, C, N, 1)``
FilterWeight = Callable[[Tensor], Tensor]


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
            projections ``N(0, 0.01)`` and zeroes every unit's output layers (its norm, or its output convs when
            there is no norm), so a freshly built block is the identity.

    Attributes:
        spatial_ranks (tuple[int]): the input ranks ``len(S)`` the block accepts.
        vertices (str): Table 1's vertex column: ``'N'`` (one node per position) or ``'N Cs'``.
        node_feature (str): Table 1's node-feature column (``'X W_Z'``: the ``g`` projection of the input).
        filter_spec (FilterSpec): which Chebyshev terms the block keeps and how their weights are shared.
        graph: the block's affinity (:class:`~snl_mm.graph.Affinity` and its siblings), set by subclasses.
    """

    spatial_ranks: Tuple[int, ...] = (1, 2, 3)
    vertices: str = 'N'
    node_feature: str = 'X W_Z'
    #: the second Chebyshev term alone, ``T_1(A) Z W``: NL, A2, CGNL, CC
    filter_spec: FilterSpec = FilterSpec(order=2, terms=(1, ))
    #: names of the 1x1 convs that project the input once for all units (``N(0, 0.01)`` at init)
    _projection_names: Tuple[str, ...] = ()
    #: names of the 1x1 convs every filter unit has of its own (``N(0, 0.01)`` at init)
    _unit_projection_names: Tuple[str, ...] = ()

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        super().__init__(init_cfg=init_cfg)
        owner = type(self).__name__
        check_positive_int(in_channels, 'in_channels', owner)
        if inner_channels is None:
            check_positive_int(reduction, 'reduction', owner)
            if in_channels % reduction:
                divisors = [r for r in range(1, in_channels + 1) if in_channels % r == 0]
                raise ValueError(
                    f'{owner}: in_channels={in_channels} is not divisible by reduction={reduction}; valid '
                    f'reductions: {divisors[:12]}{" ..." if len(divisors) > 12 else ""} (or give inner_channels)')
            inner_channels = in_channels // reduction
        else:
            check_positive_int(inner_channels, 'inner_channels', owner)
        for name, cfg in (('conv_cfg', conv_cfg), ('norm_cfg', norm_cfg), ('act_cfg', act_cfg)):
            if cfg is not None and not (isinstance(cfg, dict) and 'type' in cfg):
                raise TypeError(f'{owner}: {name} must be None or a dict with a "type", got {cfg!r}')
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

    # -- the unified form -------------------------------------------------------------------------
    def graph_operator(self, x: Tensor) -> GraphOperator:
        """The affinity ``A`` of input ``x`` ``(B, C, *S)`` as a graph operator."""
        raise NotImplementedError

    def filter_units(self) -> Sequence[nn.Module]:
        """The modules holding each filter unit's own parameters (``g``, ``W_k``, ``norm``); one by default,
        the block itself. Units run one after the other on the one affinity of the block's input."""
        return [self]

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        """``Z`` of one unit in token layout ``(B, N, c)``, from the unit's input ``x`` ``(B, C, *S)``."""
        raise NotImplementedError

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        """The unit's ``W_k``, one per kept term (one when shared), each mapping ``(B, N, c)`` signals to the
        output map ``(B, C, N, 1)``."""
        raise NotImplementedError

    def output_norm(self, unit: nn.Module) -> Tuple[Optional[nn.Module], Optional[nn.Module]]:
        """``(norm, act)`` of a unit's output: ``unit.norm`` and ``unit.act`` by default."""
        return getattr(unit, 'norm', None), getattr(unit, 'act', None)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S)``: ``X + act(norm(F(A, Z)))`` for every filter unit in turn."""
        self.check_input(x)
        op = self.graph_operator(x)
        out = x
        for unit in self.filter_units():
            filtered = graph_filter(op, self.node_features(unit, out), self.filter_spec,
                                    self.filter_weights(unit))
            out = self.residual(out, filtered, *self.output_norm(unit))
        return out

    # -- forward helpers ---------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> Tuple[int, ...]:
        """Validate ``x`` and return its spatial shape ``S`` (no checks while torch.fx traces symbolically: the
        shape is not known then)."""
        if is_fx_symbolic_tracing():
            return ()
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
    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        """The layers of a unit (the block itself by default) zeroed at init, so that it starts as the
        identity: its output norm, or its output convolutions when it has no norm."""
        raise NotImplementedError

    def init_weights(self) -> None:
        """Every unit the identity: projections ``N(0, 0.01)`` with zero bias, output layers zero.

        One path for all units: the shared projections (``theta``, ``phi``) with the first unit, each unit's own
        projections (``g``) and output layers. With an ``init_cfg`` (e.g. ``Pretrained``) mmengine's
        initialisation runs instead.
        """
        if self.init_cfg:
            super().init_weights()
            return
        for index, unit in enumerate(self.filter_units()):
            names = (self._projection_names if index == 0 else ()) + self._unit_projection_names
            for name in names:
                for m in getattr(unit, name).modules():
                    if isinstance(m, nn.modules.conv._ConvNd):
                        normal_init(m, std=0.01)
            for layer in self.output_layers(unit):
                for param in layer.parameters():
                    param.detach().zero_()

    def init_identity_start(self, root: nn.Module) -> None:
        """The residual start of a block whose units are built from ``ConvModule``s: every convolution under
        ``root`` ``N(0, 0.01)`` with zero bias, every affine norm weight 1 and bias 0, then the output layers zero
        (the block is the identity)."""
        for m in root.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                normal_init(m, std=0.01)
            elif isinstance(m, nn.modules.batchnorm._NormBase) and m.affine:
                constant_init(m, 1)
        for layer in self.output_layers():
            for param in layer.parameters():
                param.detach().zero_()

    def init_upstream_start(self, plain_convs: Sequence[nn.Module]) -> None:
        """mmsegmentation's start for a head-like block: every ``ConvModule``'s own initialisation (Kaiming
        convolutions, unit norms) and PyTorch's default for ``plain_convs`` (convolutions outside a ``ConvModule``)."""
        for m in self.modules():
            if isinstance(m, ConvModule):
                m.init_weights()
        for conv in plain_convs:
            conv.reset_parameters()

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
        self.check_input(x)
        return self.graph_operator(x).dense()

    def spectral_form(self) -> Dict[str, str]:
        """This block's row of the paper's Table 1, read off the code: vertices, edges, affinity, node feature,
        filter."""
        return dict(vertices=self.vertices, edges=f'{self.vertices} x {self.vertices}',
                    affinity=self.graph.notation, node_feature=self.node_feature,
                    filter=self.filter_spec.notation)
