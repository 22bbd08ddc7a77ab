"""The disentangled affinity of DNL (Yin et al. 2020): a whitened pairwise term plus a unary term.

``A = softmax_j(s (q_i - mu_q) . (k_j - mu_k) / tau) + 1 softmax_N(l)^T``: the pairwise term is the kernel
affinity of the centred queries and keys (:class:`~snl_mm.graph.affinity.Affinity` with ``center=True``, by fused
attention: no ``N x N`` buffer), the unary term the rank-one pooling affinity of one logit ``l_j`` per key
(:class:`~snl_mm.graph.pooling.RankOneOperator`); their sum is a :class:`~snl_mm.graph.operator.SumOperator`, so
every Chebyshev term ``T_k(A) Z`` of a filter is computed from the two without forming ``A``.
"""
from typing import Optional, Sequence, Union

import torch.nn as nn
from torch import Tensor

from .affinity import Affinity, register_affinity
from .cost import Path
from .operator import SumOperator
from .pooling import PoolingAffinity


@register_affinity('disentangled')
class DisentangledAffinity(nn.Module):
    """DNL's affinity: the pairwise kernel of whitened embeddings plus the unary (query-independent) term.

    The pairwise term is the kernel affinity ``Affinity(kernel, normalize=normalize, scale=scale,
    temperature=temperature, center=True)``; mmsegmentation's ``DisentangledNonLocal2d`` is ``'exp_dot'`` /
    ``'random_walk'`` with ``scale='inv_sqrt'`` (``use_scale``) and ``temperature=0.05``. The unary weights are
    ``s = softmax_N(l)``: with ``channels`` the affinity owns the logit projection ``l = k w + b`` of the keys
    (``unary.mask.weight``, ``unary.mask.bias``; the form for ``GraphNonlocalBlock``); without, the block passes the
    logits to the call (``DNLBlock``: its ``conv_mask`` on the block's input, as upstream).

    Args:
        kernel (str): the pairwise kernel (:data:`~snl_mm.graph.affinity.KERNELS`). Default: ``'exp_dot'``.
        normalize (str): its normalisation. Default: ``'random_walk'`` (the softmax).
        scale (float | str): its scale, ``'inv_sqrt'`` for ``1 / sqrt(c)``. Default: ``'inv_sqrt'``.
        temperature (float): ``tau``, dividing the scale. Default: 0.05 (DNL's).
        channels (int, optional): key channels ``c`` for an own unary projection.
        path (str): the pairwise term's order of products for low-rank kernels. Default: ``'auto'``.

    Call: ``affinity(q, k, spatial, unary_logits=None)`` with queries ``(B, N_q, c)``, keys ``(B, N_k, c)`` and,
    without ``channels``, the unary logits ``(B, N_k, 1)``; returns the :class:`SumOperator` of the two terms.
    """

    def __init__(self,
                 kernel: str = 'exp_dot',
                 normalize: str = 'random_walk',
                 scale: Union[float, str] = 'inv_sqrt',
                 temperature: float = 0.05,
                 channels: Optional[int] = None,
                 path: Path = 'auto'):
        super().__init__()
        self.pairwise = Affinity(kernel, normalize=normalize, scale=scale, path=path, center=True,
                                 temperature=temperature)
        self.unary = PoolingAffinity('att', channels=channels)

    @property
    def notation(self) -> str:
        """The pairwise term's notation (``M_w``: the kernel of whitened embeddings) plus ``1 s^T``."""
        return f'{self.pairwise.notation} + {self.unary.notation}'

    @property
    def float32_embeddings(self) -> bool:
        """The pairwise term's (:attr:`Affinity.float32_embeddings`): True with a temperature below 1."""
        return self.pairwise.float32_embeddings

    def extra_repr(self) -> str:
        return f'pairwise={self.pairwise!r}'

    def forward(self, q: Tensor, k: Tensor, spatial: Optional[Sequence[int]] = None,
                unary_logits: Optional[Tensor] = None) -> SumOperator:
        if self.unary.mask is None:
            if unary_logits is None:
                raise ValueError('DisentangledAffinity without channels takes the unary logits (B, N_k, 1) as '
                                 'unary_logits; give channels=<key channels> for a unary projection of its own '
                                 '(in GraphNonlocalBlock: its inner_channels)')
            unary = self.unary(q, unary_logits, spatial)
        else:
            if unary_logits is not None:
                raise ValueError('DisentangledAffinity with channels projects its own unary logits from the keys; '
                                 'build it without channels to pass unary_logits')
            unary = self.unary(q, k, spatial)
        return SumOperator(self.pairwise(q, k, spatial), unary)
