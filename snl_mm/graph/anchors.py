"""Pyramid-pooled anchors (ANN, Zhu et al. 2019): every query attends to ``S`` pooled summaries of the keys.

The key map is average-pooled by adaptive pooling at several scales, ``(1, 3, 6, 8)`` by default, each scale
``s`` giving ``s^d`` bins of a ``d``-dimensional map (``S = 1 + 9 + 36 + 64 = 110`` anchors in 2D, concatenated
scale by scale as mmsegmentation's ``PPMConcat``). As a graph over the ``N`` positions:

    ``A = R P``,  ``R = softmax_S(s Q (P K)^T)`` (``N_q x S``),  ``P`` the ``S x N_k`` pooling map,

so ``A z = R (P z)``: the signal is pooled to the anchors and attended over them
(:func:`~snl_mm.graph.softmax.softmax_attention`): memory ``O(N S)``, never ``N x N``. For a square ``A`` the
powers run through the ``S x S`` core ``C = P R``: ``A^k z = R C^{k-1} P z``, so every Chebyshev term
``T_k(A) z`` is ``a_k z + R u_k`` with ``u_k`` computed among the anchors (:meth:`AnchorOperator.chebyshev_basis`);
``C`` has the eigenvalues of ``A`` other than its ``N - S`` zeros (``RP`` and ``PR`` share their non-zero
spectrum), so :meth:`AnchorOperator.core` gives ``A``'s spectrum at any ``N`` from an ``S x S`` matrix.

The pooling is separable: per axis of length ``L`` the bins of scale ``s`` are ``[floor(i L / s),
ceil((i + 1) L / s))`` (adaptive average pooling's, defined for any ``L``, also ``L < s``), so ``P`` is the
Kronecker product of per-axis averaging matrices. It is computed as one matrix product per axis with the
averaging matrices of all scales stacked (:func:`pyramid_pool`): plain products that trace with dynamic
shapes (ONNX has no adaptive pooling of a non-constant size), for 1D, 2D and 3D maps alike.
"""
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .affinity import register_affinity
from .operator import GraphOperator, resolve_scale
from .precision import compute_dtype, float32, no_autocast
from .softmax import softmax_matmul

# one call in a torch.fx graph, as in snl_mm.graph.softmax (fx patches the name where it is looked up)
torch.fx.wrap('softmax_matmul')

#: mmsegmentation's ANN pooling scales: 110 anchors of a 2D map
POOL_SCALES: Tuple[int, ...] = (1, 3, 6, 8)


def num_anchors(scales: Sequence[int], rank: int) -> int:
    """``S = sum_s s^rank``: the anchors of a map of ``rank`` spatial axes."""
    return sum(s**rank for s in scales)


def adaptive_pool_matrix(length: Union[int, Tensor], scales: Sequence[int], dtype: torch.dtype,
                         device: torch.device) -> Tensor:
    """The averaging matrices of adaptive pooling of an axis of ``length`` to each of ``scales`` bins, stacked:
    ``(sum(scales), length)``, row ``i`` of scale ``s`` averaging ``[floor(i L / s), ceil((i + 1) L / s))``.

    Built from integer tensors only (no Python arithmetic on ``length``), so that a traced graph keeps it
    a function of the input's shape."""
    positions = torch.arange(length, device=device)  # (L,)
    size = positions[-1:] + 1  # L as a tensor (dynamic under the tracers)
    rows = []
    for s in scales:
        i = torch.arange(s, device=device).unsqueeze(1)  # (s, 1)
        start = torch.div(i * size, s, rounding_mode='floor')
        end = torch.div((i + 1) * size + (s - 1), s, rounding_mode='floor')
        inside = (positions >= start) & (positions < end)
        rows.append(inside.to(dtype) / (end - start).to(dtype))
    return torch.cat(rows)


@torch.fx.wrap
def pyramid_pool(z: Tensor, spatial: Sequence[int], scales: Sequence[int]) -> Tensor:
    """Adaptive average pooling of signals ``z`` ``(B, N, c)`` on a map of shape ``spatial`` (``N = prod``) at
    each scale, concatenated: ``(B, S, c)``, the bins of each scale in row-major order (mmsegmentation's
    ``PPMConcat``). Runs in the compute dtype of ``z``: every output is an average of its inputs.

    One product per axis with the stacked matrices of all scales (channel-major, the layout of the 1x1
    convolutions that make ``z``); the ``(sum s)^d`` grid of every scale pair then holds each scale's
    ``s^d`` bins as a diagonal block."""
    dtype = compute_dtype(z)
    rank = len(spatial)
    with no_autocast(z.device.type):
        m = z.to(dtype).transpose(1, 2).reshape(z.shape[0], z.shape[2], *spatial)  # (B, c, *S)
        last = rank + 1  # non-negative dimensions: the TorchScript ONNX exporter writes a negative one into perm
        for axis in reversed(range(rank)):
            p = adaptive_pool_matrix(spatial[axis], scales, dtype, z.device)  # (T, L)
            m = torch.matmul(m.movedim(2 + axis, last), p.t()).movedim(last, 2 + axis)
        blocks, offset = [], 0
        for s in scales:
            index = (slice(None), slice(None)) + (slice(offset, offset + s), ) * rank
            blocks.append(m[index].reshape(m.shape[0], m.shape[1], s**rank))
            offset += s
        return torch.cat(blocks, dim=2).transpose(1, 2)


@torch.fx.wrap
def anchor_attention(q: Tensor, anchors: Tensor, scale: Union[float, str]) -> Tensor:
    """``R = softmax_S(s q a^T)`` ``(B, N_q, S)`` formed in float32 (at least), ``O(N S)``: the weights of the core
    (filters of order 3 and more) and of analysis; ``A z`` itself runs through :meth:`AnchorOperator.attend`."""
    with no_autocast(q.device.type):
        q, anchors = float32(q), float32(anchors.to(q.dtype))
        logits = resolve_scale(scale, q.shape[-1]) * torch.bmm(q, anchors.transpose(1, 2))
        return torch.softmax(logits, dim=-1)


class AnchorOperator(GraphOperator):
    """``A = R P``: queries attend to the pyramid-pooled keys, signals are pooled the same way.

    Args:
        q (Tensor): queries ``(B, N_q, c)``.
        k (Tensor): keys ``(B, N_k, c)`` of a map of shape ``spatial``.
        spatial (sequence[int]): the key map's spatial shape (``N_k = prod(spatial)``).
        scales (sequence[int]): the pooling scales.
        scale (float | str): ``s``, or ``'inv_sqrt'`` for ``1 / sqrt(c)``.

    Attributes:
        anchors (Tensor): the pooled keys ``P K`` ``(B, S, c)``.
    """

    def __init__(self, q: Tensor, k: Tensor, spatial: Sequence[int], scales: Sequence[int],
                 scale: Union[float, str]):
        self.q = q
        self.spatial = spatial
        self.scales = tuple(scales)
        self.scale = scale
        self.anchors = pyramid_pool(k, spatial, self.scales)

    def pool(self, z: Tensor) -> Tensor:
        """``P z``: signals ``(B, N_k, c)`` pooled to the anchors, ``(B, S, c)``."""
        return pyramid_pool(z, self.spatial, self.scales)

    def attend(self, u: Tensor) -> Tensor:
        """``R u``: anchor signals ``(B, S, c)`` attended by the queries (:func:`~snl_mm.graph.softmax.softmax_matmul`),
        ``(B, N_q, c)``."""
        return softmax_matmul(self.q, self.anchors, u, self.scale)

    def matmul(self, z: Tensor) -> Tensor:
        """``A z = R (P z)`` for signals ``(B, N_k, c)``, in ``O(N S c)``."""
        return self.attend(self.pool(z))

    def attention(self) -> Tensor:
        """``R`` ``(B, N_q, S)``, float32 at least (formed: ``O(N S)``)."""
        return anchor_attention(self.q, self.anchors, self.scale)

    def pooling(self) -> Tensor:
        """``P`` ``(S, N_k)``, float32 at least: the pooling of the identity."""
        eye = torch.eye(_numel(self.spatial), dtype=float32(self.q).dtype, device=self.q.device)
        return pyramid_pool(eye.unsqueeze(0), self.spatial, self.scales)[0]

    def dense(self) -> Tensor:
        """``A = R P`` ``(B, N_q, N_k)``, float32 at least, for analysis."""
        r = self.attention()
        return torch.matmul(r, self.pooling().to(r.dtype))

    def core(self) -> Tensor:
        """``C = P R`` ``(B, S, S)``, float32 at least (needs the queries on the key map: ``N_q = N_k``): row-
        stochastic, with the non-zero eigenvalues of ``A``."""
        return anchor_core(self.attention(), self.spatial, self.scales)

    def chebyshev_basis(self, z: Tensor, order: int) -> List[Tensor]:
        """``[T_0(A) z, ..., T_{order-1}(A) z]`` through the core, never ``N x N``: ``T_k(A) z = a_k z + R u_k``
        with ``a_k = T_k(0)`` and the anchor signals ``u_k`` of :func:`anchor_recurrence`; each term costs one
        attention ``R u_k``."""
        if order < 1:
            raise ValueError(f'order must be >= 1, got {order}')
        terms = [z]
        if order == 1:
            return terms
        w = self.pool(z)
        terms.append(self.attend(w))
        if order == 2:
            return terms
        signals = anchor_recurrence(self.core(), w, order)
        a_prev, a = 1.0, 0.0
        for k in range(order - 2):  # indexed: a traced call's list is a proxy, not iterable
            a_prev, a = a, -a_prev
            term = self.attend(signals[k])
            terms.append(term + a * z if a else term)
        return terms


@torch.fx.wrap
def anchor_core(r: Tensor, spatial: Sequence[int], scales: Sequence[int]) -> Tensor:
    """``C = P R`` ``(B, S, S)`` of the weights ``R`` ``(B, N, S)`` on a map of shape ``spatial`` (float32 at least)."""
    with no_autocast(r.device.type):
        return pyramid_pool(r, spatial, scales)


@torch.fx.wrap
def anchor_recurrence(core: Tensor, w: Tensor, order: int) -> List[Tensor]:
    """The anchor signals ``[u_2, ..., u_{order-1}]`` ``(B, S, c)`` of the Chebyshev terms
    ``T_k(A) z = a_k z + R u_k`` for ``w = P z``: ``u_0 = 0``, ``u_1 = w``, ``u_{k+1} = 2 a_k w + 2 C u_k - u_{k-1}``
    (from ``T_{k+1} = 2 A T_k - T_{k-1}`` and ``A R = R C``), ``a_{k+1} = -a_{k-1}``. Computed in float32 (at least:
    sums over the ``S`` anchors), returned in the dtype of ``w``."""
    with no_autocast(w.device.type):
        w32 = float32(w).to(core.dtype)
        u_prev, u = torch.zeros_like(w32), w32
        a_prev, a = 1.0, 0.0
        signals = []
        for _ in range(2, order):
            u_next = 2.0 * torch.bmm(core, u) - u_prev
            if a:
                u_next = u_next + (2.0 * a) * w32
            a_prev, a = a, -a_prev
            u_prev, u = u, u_next
            signals.append(u_next.to(w.dtype))
        return signals


def _numel(spatial: Sequence[int]) -> int:
    n = 1
    for s in spatial:
        n = n * s
    return n


@register_affinity('pyramid_anchors')
class PyramidAnchors:
    """The affinity of ANN's pyramid non-local blocks: ``A = softmax_S(s Q (P K)^T) P`` over ``S`` anchors.

    Args:
        pool_scales (sequence[int]): adaptive pooling scales, each giving ``s^d`` anchors of a ``d``-dimensional
            key map. Default: ``(1, 3, 6, 8)`` (mmsegmentation's ANN: 110 anchors in 2D).
        scale (float | str): ``s``; ``'inv_sqrt'`` (default) for ``1 / sqrt(c)``, mmsegmentation's
            ``matmul_norm``.

    Call: ``affinity(q, k, spatial)`` with queries ``(B, N_q, c)``, keys ``(B, N_k, c)`` and the key map's spatial
    shape returns an :class:`AnchorOperator`.
    """

    def __init__(self, pool_scales: Sequence[int] = POOL_SCALES, scale: Union[float, str] = 'inv_sqrt'):
        pool_scales = tuple(pool_scales) if isinstance(pool_scales, (tuple, list)) else pool_scales
        if not isinstance(pool_scales, tuple) or not pool_scales or any(
                not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in pool_scales):
            raise ValueError(f'PyramidAnchors: pool_scales must be a non-empty sequence of positive integers '
                             f'(mmsegmentation uses {POOL_SCALES}), got {pool_scales!r}')
        if not (scale == 'inv_sqrt' or (isinstance(scale, (int, float)) and not isinstance(scale, bool))):
            raise TypeError(f"PyramidAnchors: scale must be a number or 'inv_sqrt', got {scale!r}")
        self.pool_scales = pool_scales
        self.scale = scale

    def __repr__(self) -> str:
        return f'PyramidAnchors(pool_scales={self.pool_scales}, scale={self.scale!r})'

    @property
    def notation(self) -> str:
        """``A`` as Table 1 writes it: ``M = exp(s Q (P K)^T)`` over the anchors, ``P`` the pooling."""
        return 'D_M^-1 M P'

    def __call__(self, q: Tensor, k: Tensor, spatial: Sequence[int]) -> AnchorOperator:
        if not is_fx_symbolic_tracing():
            if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
                raise ValueError(f'PyramidAnchors expects q (B, N_q, c) and k (B, N_k, c), got {tuple(q.shape)} '
                                 f'and {tuple(k.shape)}')
            if spatial is None or _numel(tuple(spatial)) != k.shape[1] or len(spatial) not in (1, 2, 3):
                raise ValueError(f'PyramidAnchors pools the key map: spatial must be its shape (1 to 3 axes, '
                                 f'product N_k = {k.shape[1]}), got {spatial!r}')
        return AnchorOperator(q, k, spatial, self.pool_scales, self.scale)
