"""DNL: the disentangled nonlocal block of Yin et al. 2020, laid out as mmsegmentation's ``DisentangledNonLocal2d``."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from snl_mm.graph import DisentangledAffinity, GraphOperator
from snl_mm.graph.precision import outside_autocast
from snl_mm.registry import ROOT_MODELS
from .gc import mask_logits
from .nl import NLBlock
from .tokens import ConfigType, flatten_map, to_tokens

# one call in a torch.fx graph (fx patches the name where it is looked up)
torch.fx.wrap('outside_autocast')


@ROOT_MODELS.register_module()
class DNLBlock(NLBlock):
    """Disentangled nonlocal block: ``Y = X + act(conv_out((A_p + 1 s^T) Z))``, ``Z = g(X)``.

    The affinity is the sum of a whitened pairwise term and a unary term (DNL's Eq. 6 as mmsegmentation computes
    it; :class:`~snl_mm.graph.DisentangledAffinity`):

    * pairwise: the queries and keys minus their means over positions, ``q~ = theta - mu_theta``,
      ``k~ = phi - mu_phi``, then NL's kernel: ``embedded_gaussian``:
      ``A_p = softmax_j(q~_i . k~_j / (sqrt(Cs) tau))`` (no ``sqrt(Cs)`` with ``use_scale=False``), by fused attention
      (no ``N x N`` buffer); ``gaussian``: ``softmax_j(x~_i . x~_j)`` on the centred input; ``dot_product``:
      ``q~_i . k~_j / N``, in ``O(N Cs^2)``. The temperature applies to ``embedded_gaussian`` only, as upstream;
    * unary: ``1 s^T`` with ``s = softmax_N(conv_mask(X))``, one logit per position from the block's input: every
      position receives the same ``s^T Z`` (``O(N Cs)``).

    In the unified form (paper Eq. 4, second Chebyshev term) this is NL's ``F(A, Z) = A Z W`` on the affinity
    ``A = A_p + 1 s^T``; ``GraphNonlocalBlock(affinity=dict(type='disentangled'), ...)`` puts the same
    affinity under any Chebyshev filter. With the same weights the block computes what mmsegmentation's
    ``DisentangledNonLocal2d`` (the block of ``DNLHead``) computes, for any input rank. One difference, in
    ``gaussian`` mode only: upstream subtracts the mean from a view of its input in place, so its residual is the
    centred input (and the caller's tensor is changed); here the residual is the input itself.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, any rank 1-3 (upstream is 2D).
        reduction (int): ``Cs = C // reduction``. Default: 2.
        inner_channels (int, optional): ``Cs`` directly.
        mode (str): ``'embedded_gaussian'``, ``'gaussian'`` or ``'dot_product'``. Default:
            ``'embedded_gaussian'``.
        use_scale (bool): the ``1 / sqrt(Cs)`` of ``embedded_gaussian``. Default: True (``DNLHead``'s).
        temperature (float): ``tau > 0`` of ``embedded_gaussian``. Default: 0.05 (``DNLHead``'s).
        sub_sample (bool): must be False: upstream's unary term weights the ``N`` positions of the input while
            sub-sampling leaves ``N / 4`` values, so ``DisentangledNonLocal2d`` fails with it; it has no definition
            to match.
        bias (bool): biases in ``g``, ``theta``, ``phi`` (as upstream); ``conv_mask`` always has one. Default: True.
        conv_cfg (dict, optional): 1x1 convolution config.
        norm_cfg (dict, optional): the norm of ``conv_out``. Default: ``dict(type='BN')``.
        act_cfg (dict, optional): activation after ``conv_out``. Default: None.
        init_cfg (dict, optional): mmengine init config.

    Checkpoint keys (``DisentangledNonLocal2d``'s, which load strictly): NL's (``g.conv``, ``theta.conv``,
    ``phi.conv``, ``conv_out.conv``, ``conv_out.bn``) and ``conv_mask`` (``C -> 1``, with bias).
    """

    _abbr_ = 'dnl_block'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 mode: str = 'embedded_gaussian',
                 use_scale: bool = True,
                 temperature: float = 0.05,
                 sub_sample: bool = False,
                 bias: bool = True,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        if sub_sample:
            raise ValueError('DNLBlock: sub_sample must be False: the unary term weights all N positions of the '
                             'input while sub-sampling leaves N / 4 values (mmsegmentation\'s '
                             'DisentangledNonLocal2d fails with it)')
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f'DNLBlock: temperature must be a number > 0, got {temperature!r}')
        super().__init__(in_channels, reduction, inner_channels, mode=mode, use_scale=use_scale, sub_sample=False,
                         bias=bias, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg, init_cfg=init_cfg)
        self.temperature = temperature
        self.conv_mask = self.pointwise(in_channels, 1)
        if mode == 'embedded_gaussian':
            pairwise = dict(scale='inv_sqrt' if use_scale else 1.0, temperature=temperature)
        elif mode == 'gaussian':
            pairwise = dict(scale=1.0, temperature=1.0)
        else:
            pairwise = dict(kernel='dot', normalize='size', scale=1.0, temperature=1.0)
        self.graph = DisentangledAffinity(**pairwise)

    def queries_keys(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """NL's queries and keys; with a temperature below 1 their projections run outside autocast: the logits are
        their products over ``tau``, which would multiply half precision's rounding by ``1 / tau`` (20 for DNL's
        0.05; the attention runs in float32 for the same reason)."""
        if not self.graph.float32_embeddings:
            return super().queries_keys(x)
        xf = flatten_map(x)
        return to_tokens(outside_autocast(self.theta, xf)), to_tokens(outside_autocast(self.phi, xf))

    def graph_operator(self, x: Tensor) -> GraphOperator:
        """``A_p + 1 s^T`` of input ``x`` ``(B, C, *S)``."""
        q, k = self.queries_keys(x)
        logits = mask_logits(self.conv_mask, flatten_map(x))
        return self.graph(q, k, x.shape[2:], unary_logits=logits)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, mode={self.mode!r}, temperature={self.temperature}'
