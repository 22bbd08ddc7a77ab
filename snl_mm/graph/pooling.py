"""Query-independent affinities of rank one: every query pools the keys with the same weights.

``A = 1 s^T`` with ``s`` a distribution over the ``N_k`` keys: ``s = softmax_N(X w)`` (attention pooling, GC's and
DNL's unary term) or ``s = 1 / N_k`` (average pooling, SE). Every row of ``A z`` is the one context ``s^T z``, so
:class:`RankOneOperator` computes that ``(B, 1, c)`` context in ``O(N c)`` and returns it broadcast over the
queries (an expanded view, no ``N`` copies). Since ``s^T 1 = 1``, ``A^2 = A``: the operator applied to its own
broadcast output returns it (up to rounding), so the Chebyshev terms ``T_k(A) Z`` of any filter come out right
from the same products. The weights and the sum over positions run in float32 (at least): they are reductions over
``N`` (:mod:`snl_mm.graph.precision`).
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .affinity import register_affinity
from .operator import GraphOperator
from .precision import compute_dtype, float32, no_autocast

#: the pooling weights ``s``: attention (a softmax of one logit per key) or average
POOLINGS = ('att', 'avg')


@torch.fx.wrap
def attention_weights(logits: Tensor) -> Tensor:
    """``s = softmax_N(l)`` of logits ``(B, N, 1)``: ``(B, N)``, float32 at least."""
    with no_autocast(logits.device.type):
        return torch.softmax(float32(logits[..., 0]), dim=1)


@torch.fx.wrap
def pooled_context(weights: Optional[Tensor], z: Tensor) -> Tensor:
    """The context ``s^T z`` ``(B, 1, c)`` of signals ``z`` ``(B, N, c)``, ``s`` given ``(B, N)`` or uniform
    (``weights=None``: the mean over positions); summed in float32 (at least), returned in the compute dtype of
    ``z``."""
    dtype = compute_dtype(z)
    with no_autocast(z.device.type):
        # in the channel-major layout of the maps the signals come from (z a transposed view): z^T s is one
        # matrix-vector product per sample over contiguous rows, and its gradient a contiguous outer product
        zt = float32(z).transpose(1, 2)  # (B, c, N)
        if weights is None:
            context = zt.mean(dim=2, keepdim=True)
        else:
            context = torch.bmm(zt, weights.to(zt.dtype).unsqueeze(2))
        return context.transpose(1, 2).to(dtype)


@torch.fx.wrap
def broadcast_rows(context: Tensor, queries: Tensor) -> Tensor:
    """``(B, 1, c)`` expanded to ``(B, N_q, c)`` for queries ``(B, N_q, *)``: a view, no copy."""
    return context.expand(context.shape[0], queries.shape[1], context.shape[2])


class RankOneOperator(GraphOperator):
    """``A = 1 s^T``: every query pools the keys with the weights ``s``.

    Args:
        weights (Tensor, optional): ``s`` ``(B, N_k)`` (rows summing to 1); None for the uniform ``1 / N_k``.
        queries (Tensor): ``(B, N_q, *)``; only its shape is used (the number of rows of ``A``).
        keys (Tensor): ``(B, N_k, *)``; only its shape is used.
    """

    def __init__(self, weights: Optional[Tensor], queries: Tensor, keys: Tensor):
        self.weights = weights
        self.queries = queries
        self.keys = keys

    def context(self, z: Tensor) -> Tensor:
        """``s^T z``: ``(B, 1, c)`` for signals ``z`` ``(B, N_k, c)``."""
        return pooled_context(self.weights, z)

    def matmul(self, z: Tensor) -> Tensor:
        """``A z = 1 (s^T z)``: the context broadcast over the ``N_q`` queries, ``(B, N_q, c)`` (a view)."""
        return broadcast_rows(self.context(z), self.queries)

    def core(self) -> Tensor:
        """``C = s^T 1`` ``(B, 1, 1)``, float32 (at least): the one non-zero eigenvalue of ``A = 1 s^T`` (``A``'s
        spectrum is ``C``'s and ``N - 1`` zeros; 1 up to rounding, ``s`` being a distribution)."""
        if self.weights is None:
            return torch.ones(self.keys.shape[0], 1, 1, dtype=float32(self.keys).dtype, device=self.keys.device)
        return float32(self.weights).sum(dim=1).reshape(-1, 1, 1)

    def dense(self) -> Tensor:
        """``A`` as ``(B, N_q, N_k)`` float32 (at least): ``s`` in every row."""
        b, n_q, n_k = self.keys.shape[0], self.queries.shape[1], self.keys.shape[1]
        if self.weights is None:
            return torch.full((b, n_q, n_k), 1.0 / n_k, dtype=float32(self.keys).dtype, device=self.keys.device)
        return self.weights.unsqueeze(1).expand(b, n_q, n_k).clone()


@register_affinity('pooling')
class PoolingAffinity(nn.Module):
    """The rank-one affinity ``A = 1 s^T`` of context pooling (GCNet, SE, DNL's unary term).

    ``pooling='att'``: ``s = softmax_N(l)`` with one logit ``l_j`` per key. Without ``channels`` the keys given to
    the call are those logits, ``(B, N_k, 1)`` (a block that projects them itself: GC's and DNL's ``conv_mask``);
    with ``channels`` the affinity owns the projection ``l = k w + b`` of ``c`` key channels (``mask.weight``,
    ``mask.bias``; ``GraphNonlocalBlock`` fills ``channels`` with its ``inner_channels``, so that
    ``GraphNonlocalBlock(affinity=dict(type='pooling'))`` works; the affinity is query-independent, so there its
    ``theta`` receives no gradient: DDP needs ``find_unused_parameters``). ``pooling='avg'``: ``s = 1 / N_k``, the
    keys' values are not used.

    Args:
        pooling (str): ``'att'`` or ``'avg'``. Default: ``'att'``.
        channels (int, optional): channels ``c`` of the keys, for an own logit projection (``'att'``; average
            pooling has no parameters and ignores it).

    Call: ``affinity(q, k, spatial)`` with queries ``(B, N_q, *)`` and keys ``(B, N_k, c)`` returns a
    :class:`RankOneOperator`.
    """

    def __init__(self, pooling: str = 'att', channels: Optional[int] = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f'PoolingAffinity: pooling must be one of {POOLINGS}, got {pooling!r}')
        if channels is not None and (not isinstance(channels, int) or isinstance(channels, bool) or channels < 1):
            raise ValueError(f'PoolingAffinity: channels must be a positive integer, got {channels!r}')
        self.pooling = pooling
        self.channels = channels
        self.mask = nn.Linear(channels, 1) if channels is not None and pooling == 'att' else None

    @property
    def notation(self) -> str:
        """``'1 s^T'`` (attention pooling) or ``'1 1^T / N'`` (average pooling)."""
        return '1 s^T' if self.pooling == 'att' else '1 1^T / N'

    def extra_repr(self) -> str:
        return f'pooling={self.pooling!r}, channels={self.channels}'

    def forward(self, q: Tensor, k: Tensor, spatial: Optional[Sequence[int]] = None) -> RankOneOperator:
        if self.pooling == 'avg':
            return RankOneOperator(None, q, k)
        if not is_fx_symbolic_tracing():
            self._check(k)
        logits = k if self.mask is None else self.mask(k)
        return RankOneOperator(attention_weights(logits), q, k)

    def _check(self, k: Tensor) -> None:
        if k.dim() != 3:
            raise ValueError(f'PoolingAffinity expects keys (B, N_k, c), got shape {tuple(k.shape)}')
        if self.mask is not None and k.shape[-1] != self.channels:
            raise ValueError(f'PoolingAffinity was built for keys of channels={self.channels}, got '
                             f'{k.shape[-1]} (in GraphNonlocalBlock: its inner_channels)')
        if self.mask is None and k.shape[-1] != 1:
            raise ValueError(
                "PoolingAffinity(pooling='att') without channels takes the attention logits as keys, "
                f'(B, N_k, 1), got keys of shape {tuple(k.shape)}; give channels={k.shape[-1]} for a '
                'projection of its own')
