"""Linear attention: the efficient attention of Shen et al. 2021, as a graph block."""
from typing import Optional

from snl_mm.graph.cost import Path
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import check_positive_int
from .graph_block import GraphNonlocalBlock
from .tokens import ConfigType


@ROOT_MODELS.register_module()
class LinearAttentionBlock(GraphNonlocalBlock):
    """Efficient (linear) attention: ``Y = X + act(norm(W (softmax_c(Q) (softmax_N(K)^T V))))`` per head.

    ``Q = theta(X)``, ``K = phi(X)``, ``V = g(X)`` (``Cs`` channels each, split into ``heads`` groups). In each head
    the queries go through a softmax over their channels and every key channel through a softmax over the
    positions, and ``softmax_c(Q) (softmax_N(K)^T V)`` is computed right to left: the ``c x c`` context
    ``softmax_N(K)^T V`` first, then one product per query, ``O(N c^2)`` time and ``O(N c)`` memory. In the unified
    form (paper Eq. 4, second Chebyshev term) this is ``F(A, Z) = A Z W`` on the affinity
    ``A = softmax_c(Q) softmax_N(K)^T`` (kernel ``'softmax'`` of :class:`~snl_mm.graph.Affinity`): non-negative,
    rows summing to 1 (a random walk) and of rank ``c``, one graph per head. Shen et al.'s module adds the
    reprojection ``W`` to the input without a norm; here the output norm, zero at init, makes the inserted block
    the identity (``norm_cfg=None`` gives their form, with ``w2`` zero at init). The same graph with SNL's
    normalisation is a config: ``GraphNonlocalBlock(affinity=dict(kernel='softmax', symmetrize=True,
    normalize='symmetric'))``.

    No OpenMMLab module implements it, so there is no upstream checkpoint to load; the queries, keys and values
    share ``Cs`` channels (Shen et al. allow ``d_k != d_v``).

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, any rank 1-3.
        reduction (int): ``Cs = C // reduction``. Default: 2.
        inner_channels (int, optional): ``Cs`` directly.
        heads (int): heads, dividing ``Cs``. Default: 1.
        path (str): ``'auto'`` (cost model: dense ``N x N`` only where it is cheaper, small ``N``), ``'dense'`` or
            ``'factored'``. Default: ``'auto'``.
        bias (bool): bias in the 1x1 convolutions (Shen et al.'s have one). Default: True.
        conv_cfg (dict, optional): 1x1 convolution config.
        norm_cfg (dict, optional): output norm. Default: ``dict(type='BN')``.
        act_cfg (dict, optional): activation after the norm. Default: None.
        init_cfg (dict, optional): mmengine init config.

    Checkpoint keys: ``theta`` (queries), ``phi`` (keys), ``g`` (values), ``w2`` (the reprojection of ``A Z``),
    ``norm``.
    """

    _abbr_ = 'linear_attention'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 heads: int = 1,
                 path: Path = 'auto',
                 bias: bool = True,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        check_positive_int(heads, 'heads', 'LinearAttentionBlock')
        super().__init__(
            in_channels, reduction, inner_channels,
            affinity=dict(kernel='softmax', heads=heads, path=path),
            graph_filter=dict(order=2, terms=(1, )),
            bias=bias, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg, init_cfg=init_cfg)
        if self.inner_channels % heads:
            divisors = [h for h in range(1, self.inner_channels + 1) if self.inner_channels % h == 0]
            raise ValueError(f'LinearAttentionBlock: heads={heads} must divide the inner channels '
                             f'{self.inner_channels}; valid heads: {divisors}')
        self.heads = heads
