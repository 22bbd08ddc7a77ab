"""A nonlocal block composed from an affinity and a Chebyshev graph filter (paper Eq. 4).

``GraphNonlocalBlock`` is the unified form as a block: any affinity of :mod:`snl_mm.graph.affinity` with any
filter of :mod:`snl_mm.graph.filters`, so new blocks are a config, not a class::

    # SNL's symmetric normalisation with NS's shared weights
    dict(type='GraphNonlocalBlock',
         affinity=dict(kernel='relu_dot', symmetrize=True, normalize='symmetric'),
         graph_filter=dict(order=2, terms=(0, 1), shared_coefficients=(-1, 1)))

``SNLBlock`` and ``NSBlock`` are this block with their papers' settings.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from snl_mm.graph import AFFINITIES, FilterSpec, GraphOperator, build_affinity
from snl_mm.graph.precision import outside_autocast
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import accepts_argument, check_int
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, flatten_map, from_tokens, to_tokens

# one call in a torch.fx graph (fx patches the name where it is looked up)
torch.fx.wrap('outside_autocast')


class _Unit(nn.Module):
    """Holder of one filter unit's parameters (units after the first)."""


@ROOT_MODELS.register_module()
class GraphNonlocalBlock(NonlocalBase):
    """``Y = X + act(norm(F(A, Z)))``, ``A = affinity(theta(X), phi(X))``, ``Z = g(X)``.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``.
        reduction (int): ``Cs = C // reduction``. Default: 2.
        inner_channels (int, optional): ``Cs`` directly.
        affinity (dict): the affinity's config (:func:`snl_mm.graph.build_affinity`): the arguments of
            :class:`snl_mm.graph.Affinity` (``kernel``, ``symmetrize``, ``normalize``, ``scale``, ``path``, ``center``,
            ``temperature``, ``heads``), or a
            ``type`` of :data:`snl_mm.graph.AFFINITIES` with that class's arguments. An affinity whose state is sized
            by the embeddings (``type='em'``: the bases) gets ``channels = Cs`` unless given; one that passes no
            gradient (``type='em'`` with ``grad='none'``) leaves ``theta`` and ``phi`` frozen.
        graph_filter (dict): arguments of :class:`snl_mm.graph.FilterSpec` (``order``, ``terms``,
            ``shared_coefficients``).
        num_units (int): filter units applied one after the other, all on the one affinity computed from the
            block's input (a nonlocal stage). Default: 1.
        bias (bool): bias in the 1x1 convolutions. Default: False.
        conv_cfg, norm_cfg, act_cfg, init_cfg: see :class:`NonlocalBase`.

    Checkpoint keys: ``theta``, ``phi`` (the affinity's embeddings); for the first unit ``g`` (node
    features), ``w{k+1}`` (the weight of ``T_k(A) Z``) or ``w`` (a shared weight), ``norm``; units after the
    first under ``units.{i}.`` with the same names; an affinity's own state under ``affinity_module.``.
    """

    _abbr_ = 'graph_nonlocal'
    _projection_names = ('theta', 'phi')
    _unit_projection_names = ('g', )

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 affinity: Dict = dict(kernel='relu_dot', symmetrize=True, normalize='symmetric'),
                 graph_filter: Dict = dict(order=2),
                 num_units: int = 1,
                 bias: bool = False,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        super().__init__(in_channels, reduction, inner_channels, conv_cfg, norm_cfg, act_cfg, init_cfg)
        name = type(self).__name__
        if not isinstance(affinity, dict):
            raise TypeError(f'{name}: affinity must be a dict of Affinity arguments, got {affinity!r}')
        if not isinstance(graph_filter, dict):
            raise TypeError(f'{name}: graph_filter must be a dict of FilterSpec arguments, got '
                            f'{graph_filter!r}')
        check_int(num_units, 'num_units', name)
        try:
            graph = build_affinity(self._with_channels(affinity))
            self.filter_spec = FilterSpec(**graph_filter)
        except TypeError as err:  # an unknown key: name the valid ones
            kind = affinity.get('type', 'kernel')
            takes = 'affinity takes kernel, symmetrize, normalize, scale, path, center, temperature, heads' \
                if kind == 'kernel' else \
                f'affinity type {kind!r} takes the arguments of {AFFINITIES[kind].__name__}'
            raise TypeError(f'{name}: {err}; {takes} and graph_filter takes order, terms, '
                            'shared_coefficients') from err
        except (KeyError, ValueError) as err:
            raise type(err)(f'{name}: {err.args[0] if err.args else err}') from err
        # an affinity with state (an nn.Module: its parameters and buffers in the block's state dict) is a submodule,
        # under a name other than ``graph``, which torch.fx's GraphModule (a symbolic trace) reserves for its graph
        if isinstance(graph, nn.Module):
            self.affinity_module = graph
        else:
            self._graph = graph
        self.num_units = num_units
        cs = self.inner_channels
        self.theta = self.pointwise(in_channels, cs, bias)
        self.phi = self.pointwise(in_channels, cs, bias)
        if not getattr(self.graph, 'differentiable', True):
            # an affinity that is a constant of autograd (EM bases with grad='none') trains no embedding: frozen
            for param in (*self.theta.parameters(), *self.phi.parameters()):
                param.requires_grad = False
        self._build_unit(self, bias)
        self.units = nn.ModuleList()
        for _ in range(num_units - 1):
            self.units.append(self._build_unit(_Unit(), bias))
        self.init_weights()

    @property
    def graph(self):
        """The block's affinity: a :class:`~snl_mm.graph.Affinity`, or a registered affinity module (kept as the
        submodule ``affinity_module``)."""
        return self._modules['affinity_module'] if 'affinity_module' in self._modules else self._graph

    def _with_channels(self, affinity: Dict) -> Dict:
        """The affinity config with ``channels`` (the width of ``theta`` and ``phi``) filled in for an affinity whose
        state is sized by them (the EM bases), unless given."""
        cls = AFFINITIES.get(affinity.get('type', 'kernel'))
        if cls is not None and 'channels' not in affinity and accepts_argument(cls, 'channels'):
            return dict(affinity, channels=self.inner_channels)
        return affinity

    def _weight_names(self) -> List[str]:
        if self.filter_spec.shared_coefficients is not None:
            return ['w']
        return [f'w{t + 1}' for t in self.filter_spec.terms]

    def _build_unit(self, owner: nn.Module, bias: bool) -> nn.Module:
        owner.g = self.pointwise(self.in_channels, self.inner_channels, bias)
        for w in self._weight_names():
            setattr(owner, w, self.pointwise(self.inner_channels, self.in_channels, bias))
        owner.norm = self.build_norm(self.in_channels)
        owner.act = self.build_act()
        return owner

    def filter_units(self) -> Sequence[nn.Module]:
        return [self, *self.units]

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        unit = self if unit is None else unit
        if unit.norm is not None:
            return [unit.norm]
        return [getattr(unit, w) for w in self._weight_names()]

    def graph_operator(self, x: Tensor) -> GraphOperator:
        """The affinity of input ``x`` as a :class:`~snl_mm.graph.affinity.GraphOperator`."""
        xf = flatten_map(x)
        if getattr(self.graph, 'float32_embeddings', False):  # logits sharpened by a temperature
            return self.graph(to_tokens(outside_autocast(self.theta, xf)), to_tokens(outside_autocast(self.phi, xf)),
                              x.shape[2:])
        return self.graph(to_tokens(self.theta(xf)), to_tokens(self.phi(xf)), x.shape[2:])

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        return to_tokens(unit.g(flatten_map(x)))

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        return [lambda t, w=getattr(unit, name): w(from_tokens(t)) for name in self._weight_names()]

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, affinity={self.graph!r}, filter={self.filter_spec!r}, '
                f'num_units={self.num_units}')
