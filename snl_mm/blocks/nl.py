"""NL: the nonlocal block of Wang et al. 2018 (paper Appendix B.1), laid out as mmcv's ``NonLocal2d/3d``."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor

from snl_mm.graph import Affinity, GraphOperator
from snl_mm.registry import ROOT_MODELS
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, flat_norm_cfg, flatten_map, from_tokens, to_tokens


@torch.fx.wrap
def spatial_max_pool(x: Tensor) -> Tensor:
    """Max-pool by 2 over the spatial axes as mmcv's non-local ``sub_sample``: ``L`` in 1D, ``(H, W)`` in 2D
    and 3D (never time). One call in a ``torch.fx`` graph: the pooling depends on the input's rank."""
    rank = x.dim() - 2
    if rank == 1:
        return F.max_pool1d(x, 2)
    if rank == 2:
        return F.max_pool2d(x, 2)
    return F.max_pool3d(x, (1, 2, 2))


class SpatialMaxPool(nn.Module):
    """:func:`spatial_max_pool` as a module (mmcv's ``sub_sample`` layout: ``g.1``, ``phi.1``)."""

    def forward(self, x: Tensor) -> Tensor:
        return spatial_max_pool(x)


@ROOT_MODELS.register_module()
class NLBlock(NonlocalBase):
    """Nonlocal block: ``Y = X + act(conv_out(A Z))``, ``conv_out`` = 1x1 conv + norm.

    With the same settings and weights it computes what mmcv's ``NonLocal1d/2d/3d`` compute (mmaction2's
    I3D non-local models use ``NonLocal3d``), for any input rank, through fused attention:

    * ``embedded_gaussian``: ``A = softmax_j(theta_i . phi_j / sqrt(Cs))`` (no scale with
      ``use_scale=False``);
    * ``gaussian``: ``A = softmax_j(x_i . x_j)`` on the raw input;
    * ``dot_product``: ``A = theta_i . phi_j / N``, computed as ``theta (phi^T Z) / N`` (linear in ``N``).

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``.
        reduction (int): ``Cs = C // reduction``. Default: 2.
        inner_channels (int, optional): ``Cs`` directly.
        mode (str): ``'embedded_gaussian'``, ``'gaussian'`` or ``'dot_product'``.
        use_scale (bool): the ``1 / sqrt(Cs)`` of ``embedded_gaussian``. Default: True.
        sub_sample (bool): max-pool ``phi`` and ``g`` by 2 over ``(H, W)`` (``L`` in 1D). Default: False.
        bias (bool): biases in ``g``, ``theta``, ``phi`` (and in ``conv_out`` when it has no norm), as mmcv's
            ``NonLocal2d`` and Wang et al.'s code; False builds every 1x1 convolution without one, as the
            spectral paper's code. Default: True.
        conv_cfg (dict, optional): 1x1 convolution config.
        norm_cfg (dict, optional): the norm of ``conv_out``. Default: ``dict(type='BN')``.
        act_cfg (dict, optional): activation after ``conv_out``. Default: None.
        init_cfg (dict, optional): mmengine init config.

    Checkpoint keys (mmcv's): ``g.conv``, ``theta.conv``, ``phi.conv``, ``conv_out.conv``, ``conv_out.bn``
    (``conv_out.gn`` with GN); with ``sub_sample`` ``g.0.conv`` and ``phi.0.conv``. A ``NonLocal3d``
    checkpoint's ``(O, I, 1, 1, 1)`` kernels load as they are.
    """

    _abbr_ = 'nl_block'
    MODES = ('embedded_gaussian', 'gaussian', 'dot_product')

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 mode: str = 'embedded_gaussian',
                 use_scale: bool = True,
                 sub_sample: bool = False,
                 bias: bool = True,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        super().__init__(in_channels, reduction, inner_channels, conv_cfg, norm_cfg, act_cfg, init_cfg)
        if mode not in self.MODES:
            raise ValueError(f'NLBlock: mode must be one of {self.MODES}, got {mode!r}')
        self.mode = mode
        self.use_scale = use_scale
        self.sub_sample = sub_sample
        self.bias = bias
        cs = self.inner_channels
        self.g = ConvModule(in_channels, cs, 1, conv_cfg=conv_cfg, bias=bias, act_cfg=None)
        # mmcv's conv_out has a bias only without a norm ('auto'); bias=False removes that one too
        self.conv_out = ConvModule(cs, in_channels, 1, conv_cfg=conv_cfg, bias='auto' if bias else False,
                                   norm_cfg=flat_norm_cfg(norm_cfg), act_cfg=None)
        if mode != 'gaussian':
            self.theta = ConvModule(in_channels, cs, 1, conv_cfg=conv_cfg, bias=bias, act_cfg=None)
            self.phi = ConvModule(in_channels, cs, 1, conv_cfg=conv_cfg, bias=bias, act_cfg=None)
        if sub_sample:
            # the same module tree as mmcv (keys g.0.conv, phi.0.conv): checkpoints load unchanged
            self.g = nn.Sequential(self.g, SpatialMaxPool())
            self.phi = nn.Sequential(self.phi, SpatialMaxPool()) if mode != 'gaussian' \
                else SpatialMaxPool()
        self.act = self.build_act()
        if mode == 'dot_product':
            self.graph = Affinity(kernel='dot', normalize='size')
        else:
            scale = 'inv_sqrt' if (mode == 'embedded_gaussian' and use_scale) else 1.0
            self.graph = Affinity(kernel='exp_dot', normalize='random_walk', scale=scale)
        self.init_weights()

    @property
    def _projection_names(self) -> Tuple[str, ...]:
        return ('g',) if self.mode == 'gaussian' else ('g', 'theta', 'phi')

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        return [self.conv_out.norm if self.conv_out.with_norm else self.conv_out.conv]

    def check_input(self, x: Tensor) -> Tuple[int, ...]:
        spatial = super().check_input(x)
        pooled = spatial if len(spatial) == 1 else spatial[-2:]
        if self.sub_sample and spatial and min(pooled) < 2:
            raise ValueError(f'NLBlock with sub_sample=True max-pools {"L" if len(spatial) == 1 else "(H, W)"} '
                             f'by 2 and needs them >= 2, got an input of shape {tuple(x.shape)}; use '
                             'sub_sample=False for smaller maps')
        return spatial

    def _embed(self, module: nn.Module, x: Tensor) -> Tensor:
        """Tokens ``(B, N', c)`` of a projection (and, with ``sub_sample``, its pooling) of ``x``."""
        if isinstance(module, SpatialMaxPool):
            return to_tokens(flatten_map(module(x)))
        if isinstance(module, nn.Sequential):
            conv, pool = module
            m = conv(flatten_map(x))[..., 0].unflatten(2, x.shape[2:])  # (B, Cs, *S)
            return to_tokens(flatten_map(pool(m)))
        return to_tokens(module(flatten_map(x)))

    def queries_keys(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """The affinity's queries ``(B, N, c)`` and keys ``(B, N', c)`` of input ``x`` (the raw input in
        ``gaussian`` mode)."""
        if self.mode == 'gaussian':
            q = to_tokens(flatten_map(x))
            return q, (self._embed(self.phi, x) if self.sub_sample else q)
        return self._embed(self.theta, x), self._embed(self.phi, x)

    def graph_operator(self, x: Tensor) -> GraphOperator:
        return self.graph(*self.queries_keys(x))

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        return self._embed(self.g, x)

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        return [lambda t: self.conv_out(from_tokens(t))]

    def output_norm(self, unit: nn.Module):
        # the norm is conv_out's own (mmcv's layout): only the activation follows
        return None, self.act
