"""Criss-cross attention (CC, Huang et al. 2019) as a graph operator, in pure PyTorch for 2D and 3D grids.

Position ``i`` of a grid ``S`` = ``(H, W)`` or ``(T, H, W)`` attends to the positions on its criss-cross: those
that share all coordinates with it but one (its row and column in 2D; its row, column and time line in 3D),
itself included exactly once. One softmax runs jointly over the whole cross:

    ``A_ij = exp(q_i . k_j) / sum_{l in cross(i)} exp(q_i . k_l)`` for ``j`` in ``cross(i)``, 0 elsewhere.

The logits are computed line by line (``O(N (H + W [+ T]) c)``, never an ``N x N`` tensor). The centre lies on
every line through ``i``; it is kept on the last axis (``W``) and masked with ``-inf`` on the others, as mmcv's
``CrissCrossAttention`` does in 2D, so that it is counted once. The logits, the softmax and the weighted sum
run in float32 (also under autocast).
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .affinity import GraphOperator, _no_autocast, _upcast

#: the grid ranks criss-cross attention is defined on
CRISS_CROSS_RANKS = (2, 3)


def _check_spatial(spatial: Sequence[int]) -> Tuple[int, ...]:
    spatial = tuple(int(s) for s in spatial)
    if len(spatial) not in CRISS_CROSS_RANKS:
        raise ValueError(f'criss-cross attention needs a grid of rank {CRISS_CROSS_RANKS} ((H, W) or '
                         f'(T, H, W)), got spatial shape {spatial}')
    return spatial


def criss_cross_mask(spatial: Sequence[int], device=None) -> Tensor:
    """The ``(N, N)`` boolean criss-cross: ``True`` where ``j`` shares all coordinates with ``i`` but one.

    Positions are numbered in row-major order of ``spatial`` (as ``x.flatten(2)``).
    """
    spatial = _check_spatial(spatial)
    grids = torch.meshgrid(*[torch.arange(s, device=device) for s in spatial], indexing='ij')
    coords = torch.stack([g.flatten() for g in grids], dim=1)  # (N, rank)
    differing = (coords[:, None, :] != coords[None, :, :]).sum(-1)
    return differing <= 1


def _lines(t: Tensor, axis: int) -> Tensor:
    """``(B, *S, c) -> (B, *S without axis, S[axis], c)``: the grid's lines along ``axis`` as a batch."""
    return t.movedim(1 + axis, -2)


class CrissCrossOperator(GraphOperator):
    """The criss-cross affinity of queries ``q`` and keys ``k`` on a grid.

    Args:
        q (Tensor): queries in token layout ``(B, N, c)``, ``N = prod(spatial)`` in row-major order.
        k (Tensor): keys ``(B, N, c)``.
        spatial (sequence[int]): the grid ``(H, W)`` or ``(T, H, W)``.
    """

    def __init__(self, q: Tensor, k: Tensor, spatial: Sequence[int]):
        self.spatial = _check_spatial(spatial)
        n = math.prod(self.spatial)
        if q.dim() != 3 or q.shape != k.shape or q.shape[1] != n:
            raise ValueError(f'criss-cross attention expects q and k of shape (B, N={n}, c), got '
                             f'{tuple(q.shape)} and {tuple(k.shape)}')
        self.q = _upcast(q)
        self.k = _upcast(k)
        self._weights: List[Tensor] = []

    def _grid(self, t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], *self.spatial, t.shape[-1])

    def line_weights(self) -> List[Tensor]:
        """The attention split by axis: for axis ``d`` a ``(B, *S, S[d])`` tensor whose ``[..., l]`` entry is
        the weight of the position at coordinate ``l`` on the query's line along ``d`` (the centre only on
        the last axis). Computed once per operator."""
        if self._weights:
            return self._weights
        rank = len(self.spatial)
        with _no_autocast(self.q.device.type):
            q, k = self._grid(self.q), self._grid(self.k)
            logits = []
            for axis in range(rank):
                energy = _lines(q, axis) @ _lines(k, axis).transpose(-1, -2)  # (..., query, key)
                if axis < rank - 1:
                    length = self.spatial[axis]
                    centre = torch.eye(length, dtype=torch.bool, device=energy.device)
                    energy = energy.masked_fill(centre, float('-inf'))
                logits.append(energy.movedim(-2, 1 + axis))
            attention = torch.softmax(torch.cat(logits, dim=-1), dim=-1)
        self._weights = list(attention.split(list(self.spatial), dim=-1))
        return self._weights

    def matmul(self, z: Tensor) -> Tensor:
        """``A z`` for signals ``z`` of shape ``(B, N, c_z)``."""
        dtype = z.dtype
        weights = self.line_weights()
        with _no_autocast(z.device.type):
            v = self._grid(_upcast(z))
            out = 0
            for axis, w in enumerate(weights):
                gathered = _lines(w, axis) @ _lines(v, axis)  # (..., query, c_z)
                out = out + gathered.movedim(-2, 1 + axis)
        return out.reshape(z.shape[0], -1, z.shape[-1]).to(dtype)

    def dense(self) -> Tensor:
        """The dense ``(B, N, N)`` float32 affinity, zero outside the criss-cross (analysis only)."""
        with _no_autocast(self.q.device.type):
            logits = self.q @ self.k.transpose(1, 2)
            mask = criss_cross_mask(self.spatial, device=logits.device)
            return torch.softmax(logits.masked_fill(~mask, float('-inf')), dim=-1)
