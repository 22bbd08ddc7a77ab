"""Double attention (A2, Chen et al. 2018) as a graph operator: gather, then distribute.

The block computes ``c_n`` global descriptors ``G = F softmax_pos(B)^T`` (each a convex combination of the
features over all positions) and gives every position a convex combination of them,
``Z = G softmax_desc(V)``. In the spectral view this is ``Z = A F`` with the ``N x N`` affinity

    ``A = softmax_desc(V)^T softmax_pos(B)``,  ``A_ij = sum_n softmax_desc(V)[n, i] softmax_pos(B)[n, j]``,

``A_ij`` being how much position ``i`` takes from position ``j``. ``A`` is row-stochastic (each row is a
mixture of distributions over positions) and has rank ``c_n``; it is applied as ``P (Q^T F)`` with
``P = softmax_desc(V)^T`` and ``Q = softmax_pos(B)^T`` and never formed, so the cost is ``O(N c_n c_m)``.
"""
import torch
from torch import Tensor

from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .low_rank import LowRankOperator
from .precision import float32, no_autocast


@torch.fx.wrap
def double_attention_factors(gather_logits: Tensor, distribute_logits: Tensor):
    """``(softmax_pos(B), softmax_desc(V))`` in float32 (at least), whatever the autocast state."""
    with no_autocast(gather_logits.device.type):
        return torch.softmax(float32(gather_logits), dim=1), torch.softmax(float32(distribute_logits), dim=2)


class DoubleAttention:
    """The affinity of double attention, ``A = softmax_desc(V)^T softmax_pos(B)``.

    Table 1 writes it ``M_bar = sigma(X W_phi) sigma(X W_psi)``: a product of two softmax maps, not normalised
    further (it is row-stochastic by construction).
    """

    notation = 'M_bar'

    def __repr__(self) -> str:
        return 'DoubleAttention()'

    def __call__(self, gather_logits: Tensor, distribute_logits: Tensor) -> LowRankOperator:
        """The affinity of one input, as a graph operator.

        Both softmaxes run in float32 (also under autocast); the operator multiplies in the compute dtype
        (:mod:`snl_mm.graph.precision`): both factors are distributions, so no product leaves the signal's range.

        Args:
            gather_logits (Tensor): the gather maps ``B`` in token layout ``(B, N, c_n)``; normalised over the
                ``N`` positions (one attention map per descriptor).
            distribute_logits (Tensor): the distribute maps ``V`` in token layout ``(B, N, c_n)``; normalised
                over the ``c_n`` descriptors (one selection per position).

        Returns:
            LowRankOperator: ``A`` of shape ``(B, N, N)``, applied in the factored order (its ``dense()`` forms
            it, for analysis).
        """
        if not is_fx_symbolic_tracing() and (gather_logits.dim() != 3
                                             or gather_logits.shape != distribute_logits.shape):
            raise ValueError('double_attention expects gather and distribute maps of one shape (B, N, c_n), '
                             f'got {tuple(gather_logits.shape)} and {tuple(distribute_logits.shape)}')
        gather, distribute = double_attention_factors(gather_logits, distribute_logits)
        return LowRankOperator(distribute, gather, 1.0, symmetrize=False, normalize='none', path='factored')


#: :class:`DoubleAttention` as a function: ``double_attention(gather_logits, distribute_logits)``.
double_attention = DoubleAttention()
