"""CGNL: the compact generalized nonlocal block of Yue et al. 2018 (paper Appendix B.4)."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from snl_mm.graph import CHANNEL_KERNELS, ChannelAffinity, LowRankOperator
from snl_mm.graph.cost import DENSE_LIMIT_BYTES
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import is_int
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, flatten_map


#: ``max |y|`` above which the second moment of the output norm's input overflows float32 (``2^128``)
NORM_RANGE_EXPONENT = 60


def uses_input_statistics(norm: Optional[nn.Module]) -> bool:
    """Whether ``norm`` normalises with the statistics of its current input (so that it is invariant to a
    positive rescaling of that input): GN, LN, IN, and BN in training mode."""
    if isinstance(norm, (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)):
        return True
    return isinstance(norm, nn.modules.batchnorm._BatchNorm) and (norm.training or
                                                                  not norm.track_running_stats)


def into_norm_range(y: Tensor) -> Tensor:
    """``y / 2^k`` with the smallest ``k >= 0`` that brings ``max |y|`` to at most ``2^60``.

    A power of two rescales exactly, so ``y`` is returned unchanged (``k = 0``) unless its square would
    overflow the float32 statistics of the norm that follows; a norm that uses its input's statistics gives
    the same result either way (up to its ``eps``, negligible at such magnitudes). No host synchronisation.
    """
    top = y.detach().abs().amax().float()
    exponent = torch.clamp(torch.ceil(torch.log2(top)) - NORM_RANGE_EXPONENT, min=0)
    return y / torch.exp2(exponent).to(y.dtype)


@ROOT_MODELS.register_module()
class CGNLBlock(NonlocalBase):
    """Compact generalized nonlocal block: ``Y = X + act(gn(z(A vec(g))))``, per channel group.

    The ``Cs`` channels of the projections ``t`` (theta), ``p`` (phi) and ``g`` are split into ``groups``
    groups of ``c = Cs / groups`` channels. In each group every (channel, position) pair is a node: with the
    group's maps flattened channel-major to vectors of length ``M = c N``, the block computes

    * ``kernel='dot'``: ``out_k = s t_k sum_l p_l g_l`` (one attention value per group);
    * ``kernel='gaussian'``: the RBF ``exp(-gamma (t_k - p_l)^2)`` by its Taylor expansion up to the power
      ``order``, ``out_k = s sum_{n=0}^{order} alpha_n t_k^n sum_l p_l^n g_l`` with
      ``alpha_n = beta (2 gamma)^n / n!`` and ``beta = exp(-2 gamma)`` (the reference implementation's
      simplification of ``exp(-gamma (t_k^2 + p_l^2))``),

    with ``s = 1 / sqrt(M)`` when ``use_scale``, else 1. In the unified form (paper Eq. 4, second Chebyshev
    term) this is ``F(A, Z) = A vec(Z) W`` on the channel-aware graph ``A_kl = s f(t_k, p_l)`` of
    ``M x M`` per group (:class:`~snl_mm.graph.ChannelAffinity`), ``Z = g(X)`` and ``W`` the grouped 1x1
    conv ``z`` (``Cs -> C``); ``A`` has rank 1 (dot) or ``order + 1`` (Gaussian) and is applied in ``O(M)``,
    never formed. The output norm is a GroupNorm with ``groups`` groups (weight zero at init), as the
    original; the kernel sums run in float32 under autocast. The Gaussian kernel is an unnormalised
    polynomial of degree ``2 order + 1`` in the input, so on very large inputs its output is rescaled by a
    power of two before a norm that uses its input's statistics (:func:`into_norm_range`), which keeps the
    norm's statistics finite and does not change its result. Runs on any device.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, any rank 1-3.
        reduction (int): ``Cs = C // reduction``. Default: 2.
        inner_channels (int, optional): ``Cs`` directly.
        groups (int): channel groups; must divide ``C`` and ``Cs``. Default: 1 (the spectral paper's
            comparisons; the CGNL paper uses 8).
        kernel (str): ``'dot'`` or ``'gaussian'``. Default: ``'dot'``.
        order (int): the highest Taylor power of the Gaussian kernel (``order + 1`` terms), ``>= 1``.
            Default: 3 (the CGNL reference models).
        gamma (float): the Gaussian kernel's ``gamma > 0``. Default: ``1e-4``.
        use_scale (bool): divide the kernel by ``sqrt(c N)``. Default: False (the CGNL reference models).
        bias (bool): bias in the 1x1 convolutions (the original has none). Default: False.
        conv_cfg (dict, optional): 1x1 convolution config.
        norm_cfg (dict, optional): the output norm; a GN config without ``num_groups`` gets ``groups``.
            Default: ``dict(type='GN')``.
        act_cfg (dict, optional): activation after the norm. Default: None.
        init_cfg (dict, optional): mmengine init config.

    Shapes: input and output ``(B, C, *S)``; ``affinity(x)``: ``(B, groups, c N, c N)``.

    Checkpoint keys (those of the CGNL reference ``SpatialCGNL`` / ``SpatialCGNLx``, which load unchanged):
    ``t`` (theta), ``p`` (phi), ``g`` (``C -> Cs`` each), ``z`` (grouped, ``Cs -> C``), ``gn`` (the output
    norm, whatever ``norm_cfg`` builds); 1x1 kernels of any rank load.
    """

    _abbr_ = 'cgnl_block'
    _projection_names = ('t', 'p', 'g')
    vertices = 'N Cs'
    node_feature = 'vec(X W_Z)'
    KERNELS = CHANNEL_KERNELS

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 groups: int = 1,
                 kernel: str = 'dot',
                 order: int = 3,
                 gamma: float = 1e-4,
                 use_scale: bool = False,
                 bias: bool = False,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='GN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        super().__init__(in_channels, reduction, inner_channels, conv_cfg, norm_cfg, act_cfg, init_cfg)
        cs = self.inner_channels
        if not is_int(groups) or groups < 1 or in_channels % groups or cs % groups:
            valid = [d for d in range(1, cs + 1) if cs % d == 0 and in_channels % d == 0]
            raise ValueError(f'CGNLBlock: groups must divide in_channels={in_channels} and '
                             f'inner_channels={cs}; valid groups: {valid}, got {groups!r}')
        if kernel not in self.KERNELS:
            raise ValueError(f'CGNLBlock: kernel must be one of {self.KERNELS}, got {kernel!r}')
        try:
            self.graph = ChannelAffinity(kernel=kernel, order=order, gamma=gamma, use_scale=use_scale)
        except (TypeError, ValueError) as err:
            raise type(err)(f'CGNLBlock: {err}') from err
        if norm_cfg is not None and norm_cfg.get('type') == 'GN' and 'num_groups' not in norm_cfg:
            self.norm_cfg = dict(norm_cfg, num_groups=groups)
        self.groups = groups
        self.kernel = kernel
        self.order = order
        self.gamma = gamma
        self.use_scale = use_scale
        self.t = self.pointwise(in_channels, cs, bias)
        self.p = self.pointwise(in_channels, cs, bias)
        self.g = self.pointwise(in_channels, cs, bias)
        self.z = self.pointwise(cs, in_channels, bias, groups=groups)
        self.gn = self.build_norm(in_channels)
        self.act = self.build_act()
        self.init_weights()

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        return [self.gn if self.gn is not None else self.z]

    def _group_vectors(self, m: Tensor) -> Tensor:
        """``(B, Cs, N, 1) -> (B * groups, c N)``: each group's map flattened channel-major."""
        return m.reshape(m.shape[0] * self.groups, -1)

    def graph_operator(self, x: Tensor) -> LowRankOperator:
        """The channel-aware affinity of input ``x``: ``(B * groups, c N, c N)``, of rank 1 or
        ``order + 1``, never formed by ``forward``."""
        xf = flatten_map(x)
        return self.graph(self._group_vectors(self.t(xf)), self._group_vectors(self.p(xf)))

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        """``vec(Z)``: one value per (channel, position) node, ``(B * groups, c N, 1)``."""
        return self._group_vectors(self.g(flatten_map(x))).unsqueeze(-1)

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        rescale = self.kernel == 'gaussian' and uses_input_statistics(self.gn)

        def weight(signal: Tensor) -> Tensor:
            out = self.z(signal.reshape(signal.shape[0] // self.groups, self.inner_channels, -1, 1))
            # the unnormalised Taylor kernel grows as |x|^(2 order + 1): keep the norm's input in range
            return into_norm_range(out) if rescale else out

        return [weight]

    def output_norm(self, unit: nn.Module):
        return self.gn, self.act

    def affinity(self, x: Tensor) -> Tensor:
        """The dense channel-aware affinity ``(B, groups, c N, c N)`` (float32), for small inputs only.

        Nodes are numbered channel-major within a group: node ``k = channel * N + position``.
        """
        self.check_input(x)
        b, n = x.shape[0], x[0, 0].numel()
        nodes = self.inner_channels // self.groups * n
        size = b * self.groups * nodes * nodes * 4
        if size > DENSE_LIMIT_BYTES:
            raise ValueError(f'CGNLBlock.affinity would form {b * self.groups} matrices of {nodes} x '
                             f'{nodes} ({size / 2**30:.1f} GiB, limit {DENSE_LIMIT_BYTES / 2**30:.0f} GiB); '
                             'use a smaller input')
        return self.graph_operator(x).dense().reshape(b, self.groups, nodes, nodes)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, groups={self.groups}, affinity={self.graph!r}')
