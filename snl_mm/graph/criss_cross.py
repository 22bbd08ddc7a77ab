"""Criss-cross attention (CC, Huang et al. 2019) as a graph operator, in pure PyTorch for 2D and 3D grids.

Position ``i`` of a grid ``S`` = ``(H, W)`` or ``(T, H, W)`` attends to the positions on its criss-cross: those
that share all coordinates with it but one (its row and column in 2D; its row, column and time line in 3D),
itself included exactly once. One softmax runs jointly over the whole cross:

    ``A_ij = exp(q_i . k_j) / sum_{l in cross(i)} exp(q_i . k_l)`` for ``j`` in ``cross(i)``, 0 elsewhere.

The logits are computed line by line (``O(N (H + W [+ T]) c)``, never an ``N x N`` tensor). The centre lies on
every line through ``i``; it is kept on the last axis (``W``) and masked with ``-inf`` on the others, as mmcv's
``CrissCrossAttention`` does in 2D, so that it is counted once. The logits, the softmax and the weighted sum
run in float32 (also under autocast).

Layout: signals are grids in token layout ``(B, *S, c)``. A line along any axis is then a matrix whose rows
are ``c`` contiguous channels a fixed stride apart, which BLAS reads in place: every product below runs on
strided views of the grids (:func:`_lines`) and writes into views of one output buffer, so no line is ever
copied into a line-major layout. Queries, keys and values arrive packed in one tensor (one projection makes
them) and the backward is written out (:class:`_CrissCrossAttention`), so that their gradients land in one
buffer too; it keeps only the ``(B, N, H + W [+ T])`` attention weights.

Tracers (``torch.compile``, ``torch.export``, the TorchScript tracer of ``torch.onnx``) see the same attention
written out of place with autograd's own backward (:func:`_traced_attention`): the written-out backward's
in-place products cannot run in a graph whose tensors require grad, and a traced graph has its own memory
planning. ``torch.fx`` records :func:`criss_cross_attention` as one call.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .operator import GraphOperator
from .precision import float32, no_autocast

#: the grid ranks criss-cross attention is defined on
CRISS_CROSS_RANKS = (2, 3)


def _check_rank(spatial: Sequence[int]) -> None:
    if len(spatial) not in CRISS_CROSS_RANKS:
        raise ValueError(f'criss-cross attention needs a grid of rank {CRISS_CROSS_RANKS} ((H, W) or '
                         f'(T, H, W)), got spatial shape {tuple(spatial)}')


def _check_spatial(spatial: Sequence[int]) -> Tuple[int, ...]:
    _check_rank(spatial)
    return tuple(int(s) for s in spatial)


def criss_cross_mask(spatial: Sequence[int], device=None) -> Tensor:
    """The ``(N, N)`` boolean criss-cross: ``True`` where ``j`` shares all coordinates with ``i`` but one.

    Positions are numbered in row-major order of ``spatial`` (as ``x.flatten(2)``).
    """
    spatial = _check_spatial(spatial)
    grids = torch.meshgrid(*[torch.arange(s, device=device) for s in spatial], indexing='ij')
    coords = torch.stack([g.flatten() for g in grids], dim=1)  # (N, rank)
    differing = (coords[:, None, :] != coords[None, :, :]).sum(-1)
    return differing <= 1


def _split(batch: int, spatial: Tuple[int, ...], axis: int) -> Tuple[int, int, int]:
    """``(outer, length, inner)``: the grid ``(B, *S)`` seen as ``(outer, S[axis], inner)``."""
    return batch * math.prod(spatial[:axis]), spatial[axis], math.prod(spatial[axis + 1:])


def _lines(grid: Tensor, spatial: Tuple[int, ...], axis: int) -> List[Tensor]:
    """Views of the lines of a contiguous grid ``(B, *S, c)`` along ``axis``, as 3D batches of
    ``(length, c)`` matrices: one batch of all lines for the last axis, else one batch per outer index."""
    outer, length, inner = _split(grid.shape[0], spatial, axis)
    view = grid.view(outer, length, inner, grid.shape[-1])
    if inner == 1:
        return [view[:, :, 0]]
    return list(view.transpose(1, 2).unbind(0))


def _weight_lines(weights: Tensor) -> List[Tensor]:
    """``(outer, inner, L, L)`` line matrices, batched as :func:`_lines` batches the grid's lines."""
    outer, inner, length = weights.shape[:3]
    if inner == 1:
        return [weights.view(outer, length, length)]
    return list(weights.unbind(0))


def _by_position(t: Tensor) -> Tensor:
    """``(outer, inner, L) -> (outer * L * inner,)``: per-line values in row-major position order."""
    return t.transpose(1, 2).reshape(-1)


def _as_lines(values: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`_by_position`, broadcast over the key axis of ``like`` ``(outer, inner, L, L)``."""
    outer, inner, length = like.shape[:3]
    return values.view(outer, length, inner).transpose(1, 2).unsqueeze(-1)


def _line_products(out_grid: Tensor, spatial, axis: int, left: Tensor, right: Tensor,
                   transpose_left: bool, accumulate: bool) -> None:
    """``out_lines (+)= left_lines @ right_lines`` for one axis: ``left`` is ``(outer, inner, L, L)`` line
    matrices (transposed when ``transpose_left``), ``right`` and ``out_grid`` grids ``(B, *S, c)``."""
    beta = 1 if accumulate else 0  # beta = 0 ignores the (uninitialised) output
    for w, r, o in zip(_weight_lines(left), _lines(right, spatial, axis), _lines(out_grid, spatial, axis)):
        o.baddbmm_(w.transpose(1, 2) if transpose_left else w, r, beta=beta)


def _line_softmax(q: Tensor, k: Tensor, spatial: Tuple[int, ...]) -> List[Tensor]:
    """The attention split by axis: for axis ``d`` an ``(outer, inner, S[d], S[d])`` tensor, entry
    ``[o, i, l, m]`` the weight that the query at line position ``l`` gives the key at ``m`` (the centre
    only on the last axis). ``q``, ``k`` are contiguous grids ``(B, *S, c)``."""
    rank = len(spatial)
    energies = []
    for axis in range(rank):
        outer, length, inner = _split(q.shape[0], spatial, axis)
        energy = q.new_empty(outer, inner, length, length)
        for e, ql, kl in zip(_weight_lines(energy), _lines(q, spatial, axis), _lines(k, spatial, axis)):
            torch.bmm(ql, kl.transpose(1, 2), out=e)
        if axis < rank - 1:
            energy.diagonal(dim1=-2, dim2=-1).fill_(float('-inf'))
        energies.append(energy)
    # one softmax over the whole cross: combine the per-line maxima and sums position by position
    peak = torch.stack([_by_position(e.amax(-1)) for e in energies]).amax(0)
    total = 0
    for energy in energies:
        energy.sub_(_as_lines(peak, energy)).exp_()
        total = total + _by_position(energy.sum(-1))
    for energy in energies:
        energy.div_(_as_lines(total, energy))
    return energies


class _CrissCrossAttention(torch.autograd.Function):
    """``residual + scale * (A v)`` from packed ``qkv`` grids ``(B, *S, 2 c + c_v)``, written-out backward.

    The gradient of ``qkv`` is written into one buffer, channel slice by channel slice, so that the
    projection that produced ``qkv`` gets it without a concatenation; ``scale`` multiplies the attention
    weights (``N (H + W)`` entries) instead of the values (``N C``).
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, key_channels: int, spatial: Tuple[int, ...], scale: Optional[Tensor],
                residual: Optional[Tensor]) -> Tensor:
        qkv = qkv.contiguous()
        q, k, v = _unpack(qkv, key_channels)
        weights = _line_softmax(q, k, spatial)
        attended = qkv.new_empty(v.shape)
        for axis in reversed(range(len(spatial))):
            _line_products(attended, spatial, axis, weights[axis], v, False, axis < len(spatial) - 1)
        if residual is not None:
            out = torch.addcmul(residual, attended, scale) if scale is not None else residual + attended
        else:
            out = attended * scale if scale is not None else attended
        ctx.key_channels, ctx.spatial = key_channels, spatial
        keep = attended if scale is not None and ctx.needs_input_grad[3] else None
        ctx.save_for_backward(qkv, scale, keep, *weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        qkv, scale, attended, *weights = ctx.saved_tensors
        spatial = ctx.spatial
        grad_out = grad_out.contiguous()
        grad_scale = grad_qkv = None
        if attended is not None:
            grad_scale = torch.dot(grad_out.reshape(-1), attended.reshape(-1)).reshape(scale.shape)
        if ctx.needs_input_grad[0]:
            # d(A v) = scale * dY. The attention weights are the only tensors here that grow faster than N
            # (N (H + W [+ T])): besides one gradient buffer per axis, only one scaled copy of one axis's
            # weights lives at a time.
            q, k, v = _unpack(qkv, ctx.key_channels)
            grad_qkv = torch.empty_like(qkv)
            grad_q, grad_k, grad_v = _unpack(grad_qkv, ctx.key_channels)
            products, inner = [], 0
            for axis, w in enumerate(weights):
                _line_products(grad_v, spatial, axis, w if scale is None else w * scale, grad_out, True,
                               axis > 0)
                # P = W * G with G = dY_lines V_lines^T (in the layout of W), and sum_cross(P)
                prod = torch.empty_like(w)
                for pw, go, vl in zip(_weight_lines(prod), _lines(grad_out, spatial, axis),
                                      _lines(v, spatial, axis)):
                    torch.bmm(go, vl.transpose(1, 2), out=pw)
                prod.mul_(w)
                inner = inner + _by_position(prod.sum(-1))
                products.append(prod)
            for axis, (w, grad_e) in enumerate(zip(weights, products)):
                # softmax backward over the cross: dE = scale * (P - W * sum_cross(P)), in place
                grad_e.addcmul_(w, _as_lines(inner, grad_e), value=-1)
                if scale is not None:
                    grad_e.mul_(scale)
                _line_products(grad_q, spatial, axis, grad_e, k, False, axis > 0)
                _line_products(grad_k, spatial, axis, grad_e, q, True, axis > 0)
        grad_residual = grad_out if ctx.needs_input_grad[4] else None
        return grad_qkv, None, None, grad_scale, grad_residual


def _unpack(qkv: Tensor, key_channels: int) -> Tuple[Tensor, Tensor, Tensor]:
    return qkv[..., :key_channels], qkv[..., key_channels:2 * key_channels], qkv[..., 2 * key_channels:]


def _traced_attention(qkv: Tensor, key_channels: int, scale: Optional[Tensor],
                      residual: Optional[Tensor]) -> Tensor:
    """:class:`_CrissCrossAttention`'s forward written out of place (autograd differentiates it): per axis the
    line logits ``(B, *S without d, L, L)``, the centre masked on all axes but the last, one softmax over the
    whole cross combined from the per-axis maxima and sums, and the weighted values moved back in place. Every
    size is read from the tensors, so exported graphs keep dynamic spatial axes."""
    q, k, v = _unpack(qkv, key_channels)
    last = qkv.dim() - 2  # the grid's last spatial dimension
    logits = []
    for dim in range(1, last + 1):
        qd, kd = q.movedim(dim, last), k.movedim(dim, last)  # (B, ..., L, c): lines along dim
        energy = torch.matmul(qd, kd.transpose(-1, -2))  # (B, ..., L_query, L_key)
        if dim < last:
            position = torch.arange(energy.shape[-1], device=energy.device)
            energy = energy.masked_fill(position[:, None] == position[None, :], float('-inf'))
        logits.append(energy.movedim(last, dim))  # the query's coordinate back in place: (B, *S, L_key)
    peak = logits[0].amax(-1)
    for energy in logits[1:]:
        peak = torch.maximum(peak, energy.amax(-1))
    peak = peak.detach().unsqueeze(-1)
    weights = [torch.exp(energy - peak) for energy in logits]
    total = weights[0].sum(-1, keepdim=True)
    for w in weights[1:]:
        total = total + w.sum(-1, keepdim=True)
    attended = 0
    for dim, w in zip(range(1, last + 1), weights):
        lines = torch.matmul(w.movedim(dim, last), v.movedim(dim, last))  # (B, ..., L_query, c_v)
        attended = attended + lines.movedim(last, dim)
    attended = attended / total
    if scale is not None:
        attended = attended * scale
    return attended if residual is None else residual + attended


@torch.fx.wrap
def criss_cross_attention(qkv: Tensor, key_channels: int, scale: Optional[Tensor] = None,
                          residual: Optional[Tensor] = None) -> Tensor:
    """``residual + scale * (A v)`` with ``A`` the criss-cross attention of queries ``q`` and keys ``k``.

    Args:
        qkv (Tensor): queries, keys and values packed on the channels of one grid in token layout
            ``(B, *S, 2 c + c_v)``, ``S = (H, W)`` or ``(T, H, W)``: ``q = qkv[..., :c]``,
            ``k = qkv[..., c:2c]``, ``v = qkv[..., 2c:]`` (one projection computes all three).
        key_channels (int): ``c``.
        scale (Tensor, optional): a factor broadcast over ``A v`` (CC's learned ``gamma``).
        residual (Tensor, optional): ``(B, *S, c_v)`` added to the result.

    Returns:
        Tensor: ``(B, *S, c_v)`` in the dtype of ``residual`` (of ``qkv`` without one); computed in at least
        float32.
    """
    _check_rank(qkv.shape[1:-1])
    if not (isinstance(key_channels, int) and 0 < key_channels and 2 * key_channels < qkv.shape[-1]):
        raise ValueError(f'criss-cross attention: key_channels={key_channels} leaves no value channels in '
                         f'qkv of shape {tuple(qkv.shape)} (needs 2 * key_channels < {qkv.shape[-1]})')
    if residual is not None and residual.shape != (*qkv.shape[:-1], qkv.shape[-1] - 2 * key_channels):
        raise ValueError(f'criss-cross attention: residual of shape {tuple(residual.shape)} does not match '
                         f'the values of qkv {tuple(qkv.shape)} with key_channels={key_channels}')
    dtype = qkv.dtype if residual is None else residual.dtype
    with no_autocast(qkv.device.type):
        args = (float32(qkv), key_channels, None if scale is None else float32(scale),
                None if residual is None else float32(residual))
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            out = _traced_attention(*args)
        else:
            out = _CrissCrossAttention.apply(args[0], key_channels, _check_spatial(qkv.shape[1:-1]), *args[2:])
    return out.to(dtype)


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
        self.q = q
        self.k = k

    def _grid(self, t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], *self.spatial, t.shape[-1])

    def line_weights(self) -> List[Tensor]:
        """The attention split by axis: for axis ``d`` a float32 ``(B, *S, S[d])`` tensor whose ``[..., l]``
        entry is the weight of the position at coordinate ``l`` on the query's line along ``d`` (the centre
        only on the last axis). For analysis: not differentiable."""
        with torch.no_grad(), no_autocast(self.q.device.type):
            q, k = (float32(self._grid(t)).contiguous() for t in (self.q, self.k))
            weights = _line_softmax(q, k, self.spatial)
        b = self.q.shape[0]
        out = []
        for axis, w in enumerate(weights):
            outer, length, inner = _split(b, self.spatial, axis)
            # (outer, inner, L_query, L_key) -> (outer, L_query, inner, L_key) -> (B, *S, L_key)
            out.append(w.transpose(1, 2).reshape(b, *self.spatial, length))
        return out

    def matmul(self, z: Tensor) -> Tensor:
        """``A z`` for signals ``z`` of shape ``(B, N, c_z)``."""
        dtype = torch.promote_types(self.q.dtype, z.dtype)
        qkv = torch.cat([t.to(dtype) for t in (self.q, self.k, z)], dim=-1)
        out = criss_cross_attention(self._grid(qkv), self.q.shape[-1])
        return out.reshape(z.shape).to(z.dtype)

    def dense(self) -> Tensor:
        """The dense ``(B, N, N)`` float32 affinity, zero outside the criss-cross (analysis only)."""
        with no_autocast(self.q.device.type):
            q, k = float32(self.q), float32(self.k)
            logits = q @ k.transpose(1, 2)
            mask = criss_cross_mask(self.spatial, device=logits.device)
            return torch.softmax(logits.masked_fill(~mask, float('-inf')), dim=-1)


class CrissCross:
    """The affinity of criss-cross attention: ``A = D^-1 (C o M)`` with ``M = exp(q k^T)`` and the edge mask ``C``
    of the criss-cross (:func:`criss_cross_mask`), as the paper's Table 1 writes it."""

    notation = 'D_(C.M)^-1 (C.M)'

    def __repr__(self) -> str:
        return 'CrissCross()'

    def __call__(self, q: Tensor, k: Tensor, spatial: Sequence[int]) -> CrissCrossOperator:
        """The operator of queries ``q`` and keys ``k`` ``(B, N, c)`` on the grid ``spatial``."""
        return CrissCrossOperator(q, k, spatial)
