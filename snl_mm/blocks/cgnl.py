"""CGNL: the compact generalized nonlocal block of Yue et al. 2018 (paper Appendix B.4)."""
from typing import List, Literal, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from snl_mm.graph import CHANNEL_KERNELS, ChannelAffinity, LowRankOperator
from snl_mm.graph.cost import DENSE_LIMIT_BYTES
from snl_mm.graph.precision import power_of_two, power_of_two_exponent
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import is_int
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, flatten_map


#: the largest power of two the output of ``z`` may reach, by the dtype ``z`` runs in: below float16's 65504,
#: and for float32 / bfloat16 below the square root of float32's largest number (the norm's statistics)
RANGE_EXPONENTS = {torch.float16: 15, torch.bfloat16: 62, torch.float32: 62, torch.float64: 62}

#: how far a power-of-two rescaling of ``z``'s input reaches before the norm undoes it
RescaleScope = Optional[Literal['sample', 'batch']]


def rescale_scope(norm: Optional[nn.Module], bias: bool) -> RescaleScope:
    """Over what a positive rescaling of the norm's input leaves its output unchanged (for a ``z`` without bias):
    ``'sample'`` for a norm with per-sample statistics (GN, LN, IN), ``'batch'`` for BN normalising with the
    statistics of this batch on this process (training, not SyncBN), None otherwise (BN with running
    statistics, SyncBN, no norm, or a ``z`` with a bias)."""
    if bias:
        return None
    if isinstance(norm, (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)):
        return 'sample'
    if isinstance(norm, nn.modules.batchnorm._BatchNorm) and not isinstance(norm, nn.SyncBatchNorm) \
            and (norm.training or not norm.track_running_stats):
        return 'batch'
    return None


@torch.fx.wrap
def range_exponent(y: Tensor, weight: Tensor, per_sample: bool) -> Tensor:
    """The ``k >= 0`` with ``max |y| ||W||_inf / 2^k`` at most ``2^e``, ``e`` the :data:`RANGE_EXPONENTS` entry of the
    dtype ``z`` runs in (autocast's, else ``W``'s): per sample ``(B, 1, ..., 1)`` or for the batch ``()``.

    ``||W||_inf`` (the largest row sum of ``|W|``) bounds how much ``z`` can grow its input, so ``z(y / 2^k)``
    cannot overflow. A sample with a NaN or Inf gets ``k = 0`` and keeps its own values; no host sync.
    """
    device = y.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    # (reductions over explicit dimensions: the ONNX exporters map no full amax)
    gain = weight.detach().abs().flatten(1).sum(1).amax(0).float()
    top = y.detach().abs().flatten(1 if per_sample else 0).amax(-1)
    exponent = power_of_two_exponent(top.float() * gain) - RANGE_EXPONENTS.get(dtype, 62)
    exponent = exponent.clamp(min=0)
    return exponent.reshape(-1, *[1] * (y.dim() - 1)) if per_sample else exponent


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
    original; the kernel sums run in float32 under autocast. The kernel is unnormalised (a sum over all
    ``c N`` nodes: ``~1e5`` at ordinary activations; the Gaussian kernel grows as ``|x|^(2 order + 1)``), so
    ``z`` runs on its output divided by a power of two per sample (:func:`range_exponent`) that keeps ``z``'s
    output within the range of the dtype it runs in (float16's 65504 under AMP). A norm invariant to that
    rescaling (GN, the default) removes it; otherwise it is multiplied back in float32 after ``z``. Either way
    the result is the float32 one, and one sample's magnitude never changes another's output. Runs on any
    device.

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
        scope = rescale_scope(self.gn, self.z.bias is not None)

        def weight(signal: Tensor) -> Tensor:
            # the float32 kernel sums reach ~1e5 at ordinary activations and grow as |x|^(2 order + 1): z runs on
            # y / 2^k, in range for its dtype. The norm undoes the power of two where it is invariant to it;
            # elsewhere it is multiplied back in float32 after z (exact for a linear z: z(y) = 2^k z(y / 2^k))
            # (the module's dtype: float32 under autocast, so that the norm sees the values multiplied back)
            dtype = self.z.weight.dtype
            y = signal.reshape(signal.shape[0] // self.groups, self.inner_channels, -1, 1)
            exponent = range_exponent(y, self.z.weight, scope != 'batch')
            out = self.z((y * power_of_two(-exponent)).to(dtype))
            if scope is not None:
                return out
            scale, bias = power_of_two(exponent), self.z.bias
            if bias is None:
                return (out * scale).to(dtype)
            bias = bias.reshape(-1, 1, 1)
            return ((out - bias) * scale + bias).to(dtype)

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
