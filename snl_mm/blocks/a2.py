"""A2: the double attention block of Chen et al. 2018 (paper Appendix B.3)."""
from typing import List, Optional, Sequence

import torch.nn as nn
from torch import Tensor

from snl_mm.graph import DoubleAttention, LowRankOperator
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import check_positive_int
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, flatten_map, from_tokens, to_tokens


@ROOT_MODELS.register_module()
class A2Block(NonlocalBase):
    """Double attention block: ``Y = X + act(norm(out(Z)))``.

    Three 1x1 projections of ``X``: features ``F`` (``c_m`` channels), gather maps ``B`` and distribute maps
    ``V`` (``c_n`` channels each). Gathering forms ``c_n`` global descriptors ``G = F softmax_pos(B)^T``
    (``c_m x c_n``, a softmax over the ``N`` positions per map); distributing gives each position a mixture
    of them, ``Z = G softmax_desc(V)`` (``c_m x N``, a softmax over the ``c_n`` descriptors per position);
    ``out`` maps ``c_m -> C``.

    In the unified form (paper Eq. 4, second Chebyshev term) this is ``F(A, Z) = A Z W`` with node
    features ``Z = F``, ``W`` = ``out`` and the row-stochastic affinity
    ``A = softmax_desc(V)^T softmax_pos(B)`` (``A_ij``: how much position ``i`` takes from position ``j``),
    of rank ``c_n``. ``forward`` applies it as gather-then-distribute in ``O(N c_m c_n)`` and never forms
    the ``N x N`` matrix; :meth:`affinity` does, for analysis. The softmaxes run in float32 under autocast.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, any rank 1-3.
        reduction (int): ``c_m = C // reduction`` feature channels. Default: 2.
        inner_channels (int, optional): ``c_m`` directly.
        num_descriptors (int, optional): ``c_n``, the number of global descriptors (gather and distribute
            maps). Default: ``c_m`` (the double attention paper's ``c_m = c_n`` setting).
        bias (bool): bias in the 1x1 convolutions. Default: True.
        conv_cfg (dict, optional): 1x1 convolution config.
        norm_cfg (dict, optional): the output norm (weight zero at init). Default: ``dict(type='BN')``.
        act_cfg (dict, optional): activation after the norm. Default: None.
        init_cfg (dict, optional): mmengine init config.

    Shapes: input and output ``(B, C, *S)``; ``affinity(x)``: ``(B, N, N)``, ``N = prod(S)``.

    Checkpoint keys: ``feature`` (``F``, ``C -> c_m``), ``gather`` (``B``, ``C -> c_n``), ``distribute``
    (``V``, ``C -> c_n``), ``out`` (``c_m -> C``), ``norm``; 1x1 kernels of any rank load.
    """

    _abbr_ = 'a2_block'
    _projection_names = ('feature', 'gather', 'distribute')

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 num_descriptors: Optional[int] = None,
                 bias: bool = True,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        super().__init__(in_channels, reduction, inner_channels, conv_cfg, norm_cfg, act_cfg, init_cfg)
        if num_descriptors is None:
            num_descriptors = self.inner_channels
        check_positive_int(num_descriptors, 'num_descriptors', 'A2Block', note=' (or None for inner_channels)')
        self.num_descriptors = num_descriptors
        cm, cn = self.inner_channels, num_descriptors
        self.feature = self.pointwise(in_channels, cm, bias)
        self.gather = self.pointwise(in_channels, cn, bias)
        self.distribute = self.pointwise(in_channels, cn, bias)
        self.out = self.pointwise(cm, in_channels, bias)
        self.norm = self.build_norm(in_channels)
        self.act = self.build_act()
        self.graph = DoubleAttention()
        self.init_weights()

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        return [self.norm if self.norm is not None else self.out]

    def graph_operator(self, x: Tensor) -> LowRankOperator:
        """The affinity of input ``x`` as a (never formed) rank-``c_n`` operator."""
        xf = flatten_map(x)
        return self.graph(to_tokens(self.gather(xf)), to_tokens(self.distribute(xf)))

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        return to_tokens(self.feature(flatten_map(x)))

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        return [lambda t: self.out(from_tokens(t))]

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, num_descriptors={self.num_descriptors}'
