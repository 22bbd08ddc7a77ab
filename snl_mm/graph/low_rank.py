"""Low-rank affinities ``A = D_l^{-a} M D_r^{-b}`` with ``M = s P Q^T``: SNL, A2, CGNL, NL's dot product.

The normalisation is folded into the factors once per input (:func:`low_rank_factors`), so that each product
``A z`` is matrix products only (:func:`low_rank_matmul`). With ``L``, ``R`` the row and column scalings and
``k`` the constant (``s``, ``s / 2`` when symmetrised, over ``N_k`` for ``'size'``):

* factored order: ``A z = (L P) ((k R Q)^T z) [+ (L Q) ((k R P)^T z)]``, ``O(N c c_z)``; for the symmetric
  normalisation ``L = R`` and the scaled factors are shared;
* dense order: ``A = k L M R`` is formed once (``N_q x N_k``) and ``A z`` is one product.

The degree normalisations (``'random_walk'``, ``'symmetric'``) do not change when ``M`` is multiplied by a
positive constant, so ``k`` is left out of them. Degrees, scalings and factors are float32 (at least); the
products run in the compute dtype (:mod:`snl_mm.graph.precision`), in float16 on rebalanced factors.
"""
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from .cost import Path, choose_path
from .operator import GraphOperator, inverse_power, resolve_scale
from .precision import balance_columns, compute_dtype, float32, no_autocast

#: the normalisations whose affinity has entries in ``[0, 1]`` for a non-negative kernel
DEGREE_NORMALIZATIONS = ('random_walk', 'symmetric')


class LowRankFactors(NamedTuple):
    """What :func:`low_rank_factors` computes once per input (float32 at least).

    Attributes:
        path (str): the order of products, ``'dense'`` or ``'factored'``.
        left, right (Tensor | None): the row and column scalings ``D_l^{-a}``, ``D_r^{-b}`` as ``(B, N, 1)``.
        matrix (Tensor | None): dense order: ``A``.
        outer, inner (tuple[Tensor]): factored order: ``A = sum_i outer[i] inner[i]^T``.
        half_products (bool): whether the products may run in half precision.
        bounded (bool): whether ``A``'s entries lie in ``[0, 1]`` (a normalised non-negative kernel).
    """
    path: str
    left: Optional[Tensor]
    right: Optional[Tensor]
    matrix: Optional[Tensor]
    outer: Tuple[Tensor, ...]
    inner: Tuple[Tensor, ...]
    half_products: bool
    bounded: bool


def _scalings(normalize: str, degree: Optional[Tensor]):
    """Row and column scalings ``D_l^{-a}``, ``D_r^{-b}`` as ``(B, N, 1)`` tensors (or None)."""
    if degree is None:
        return None, None
    if normalize == 'random_walk':
        return inverse_power(degree, 1.0), None
    half = inverse_power(degree, 0.5)
    return half, half


def _scale_rows(scaling: Optional[Tensor], factor: Tensor) -> Tensor:
    return factor if scaling is None else scaling * factor


def _coefficient(scale: float, symmetrize: bool, normalize: str, n_k: int) -> float:
    coef = scale * (0.5 if symmetrize else 1.0)
    if normalize == 'size':
        return coef / n_k
    if normalize in DEGREE_NORMALIZATIONS and coef > 0:
        return 1.0  # invariant to a positive factor
    return coef


def _dense_factors(p: Tensor, q: Tensor, coef: float, symmetrize: bool, normalize: str):
    m = torch.bmm(p, q.transpose(1, 2))
    if symmetrize:
        m = m + m.transpose(1, 2)
    if coef != 1.0:
        m = coef * m
    degree = m.sum(dim=2, keepdim=True) if normalize in DEGREE_NORMALIZATIONS else None
    left, right = _scalings(normalize, degree)
    if left is not None:
        m = left * m
    if right is not None:
        m = m * right.transpose(1, 2)
    return 'dense', left, right, m, (), ()


def _factored_factors(p: Tensor, q: Tensor, coef: float, symmetrize: bool, normalize: str):
    degree = None
    if normalize in DEGREE_NORMALIZATIONS:
        # row sums of k M from the factors: k (P (Q^T 1) [+ Q (P^T 1)])
        degree = torch.bmm(p, q.sum(dim=1).unsqueeze(-1))
        if symmetrize:
            degree = torch.baddbmm(degree, q, p.sum(dim=1).unsqueeze(-1))
        if coef != 1.0:
            degree = coef * degree
    left, right = _scalings(normalize, degree)
    outer: List[Tensor] = [_scale_rows(left, p)]
    inner: List[Tensor] = [_scale_rows(right, q)]
    if symmetrize:
        shared = right is left
        outer.append(inner[0] if shared else _scale_rows(left, q))
        inner.append(outer[0] if shared else _scale_rows(right, p))
    if coef != 1.0:
        inner = [coef * t for t in inner]
    return 'factored', left, right, None, tuple(outer), tuple(inner)


@torch.fx.wrap
def low_rank_factors(p: Tensor, q: Tensor, scale: Union[float, str], symmetrize: bool, normalize: str,
                     path: Path = 'auto', half_products: bool = True) -> LowRankFactors:
    """Degrees, scalings and factors of ``A`` (float32 at least) for left factor ``p`` ``(B, N_q, c)`` and right
    factor ``q`` ``(B, N_k, c)``, in the order of products the cost model picks (or ``path`` forces)."""
    with no_autocast(p.device.type):
        p, q = float32(p), float32(q)
        b, n_q, c = p.shape
        n_k = q.shape[1]
        chosen = choose_path(n_q, n_k, c, c, symmetrize, batch=b, path=path)
        coef = _coefficient(resolve_scale(scale, c), symmetrize, normalize, n_k)
        build = _dense_factors if chosen == 'dense' else _factored_factors
        bounded = normalize in DEGREE_NORMALIZATIONS and (coef > 0)
        return LowRankFactors(*build(p, q, coef, symmetrize, normalize), half_products, bounded)


def products_dtype(factors: LowRankFactors, z: Tensor) -> torch.dtype:
    """The dtype ``A z`` runs in: the compute dtype of ``z`` (:mod:`snl_mm.graph.precision`), except float32
    (at least) for products kept out of half precision and for an unbounded dense affinity in float16."""
    dtype = compute_dtype(z)
    if not factors.half_products or (dtype == torch.float16 and factors.matrix is not None
                                     and not factors.bounded):
        return float32(z).dtype
    return dtype


def result_dtype(factors: LowRankFactors, z: Tensor) -> torch.dtype:
    """The dtype ``A z`` is returned in: the compute dtype of ``z``, the dtype of the layers after the operator
    (a product run in float32 only to hold its sums is cast back once they are done); float32 (at least) for
    operators kept out of half precision altogether, whose block brings the result into range (CGNL)."""
    return compute_dtype(z) if factors.half_products else float32(z).dtype


@torch.fx.wrap
def low_rank_matmul(factors: LowRankFactors, z: Tensor) -> Tensor:
    """``A z`` for signals ``z`` ``(B, N_k, c_z)``: ``(B, N_q, c_z)``, computed in :func:`products_dtype` and
    returned in :func:`result_dtype`, laid out channel-major (a transposed view), the layout of the 1x1
    convolutions around it.

    Computed as ``(A z)^T = z^T A^T``: signals come from 1x1 convolutions (channel-major memory, ``z`` a
    transposed view), and a channel-major result feeds the next convolution without a copy. In float16 the
    factors are rebalanced (:func:`~snl_mm.graph.precision.balance_columns`) so that the sums over ``N_k`` stay
    within ``max |z|``.
    """
    dtype, result = products_dtype(factors, z), result_dtype(factors, z)
    with no_autocast(z.device.type):
        zt = z.to(dtype).transpose(1, 2)  # (B, c_z, N_k)
        if factors.matrix is not None:
            return torch.bmm(zt, factors.matrix.to(dtype).transpose(1, 2)).to(result).transpose(1, 2)
        out = None
        for outer, inner in zip(factors.outer, factors.inner):
            if dtype == torch.float16:
                inner, outer = balance_columns(inner, outer)
            small = torch.bmm(zt, inner.to(dtype))  # (B, c_z, c): the sum over N_k
            outer = outer.to(dtype).transpose(1, 2)
            out = torch.bmm(small, outer) if out is None else torch.baddbmm(out, small, outer)
        return out.transpose(1, 2)


class LowRankOperator(GraphOperator):
    """``A = D_l^{-a} M D_r^{-b}`` for a rank-``c`` kernel ``M = s P Q^T`` (or its symmetrisation).

    Args:
        p (Tensor): left factor ``(B, N_q, c)`` (already through the kernel's feature map, e.g. ReLU).
        q (Tensor): right factor ``(B, N_k, c)``.
        scale (float | str): ``s``, or ``'inv_sqrt'`` for ``1 / sqrt(c)``.
        symmetrize (bool): use ``(M + M^T) / 2`` (needs ``N_q == N_k``).
        normalize (str): one of ``'none'``, ``'size'``, ``'random_walk'``, ``'symmetric'``.
        path (str): ``'auto'`` (cost model), ``'dense'`` or ``'factored'``.
        half_products (bool): let the products run in half precision under autocast (the policy of
            :mod:`snl_mm.graph.precision`); False keeps them in float32 (CGNL: its products are sums over all
            nodes).

    Attributes:
        path (str): the order of products taken, ``'dense'`` or ``'factored'``.
        left, right (Tensor | None): the row and column scalings ``D_l^{-a}``, ``D_r^{-b}`` as ``(B, N, 1)``.
    """

    def __init__(self, p: Tensor, q: Tensor, scale: Union[float, str], symmetrize: bool, normalize: str,
                 path: Path = 'auto', half_products: bool = True):
        self.p, self.q = p, q
        self.scale = scale
        self.symmetrize = symmetrize
        self.normalize = normalize
        self.requested_path = path
        self.factors = low_rank_factors(p, q, scale, symmetrize, normalize, path, half_products)

    @property
    def path(self) -> str:
        return self.factors.path

    @property
    def left(self) -> Optional[Tensor]:
        return self.factors.left

    @property
    def right(self) -> Optional[Tensor]:
        return self.factors.right

    @property
    def _shape(self) -> Tuple[int, int, int, int]:
        """``(B, N_q, N_k, c)``."""
        b, n_q, c = self.p.shape
        return b, n_q, self.q.shape[1], c

    def matmul(self, z: Tensor) -> Tensor:
        return low_rank_matmul(self.factors, z)

    def dense(self) -> Tensor:
        """``A`` as ``(B, N_q, N_k)``, float32 at least."""
        f = self.factors
        if f.matrix is not None:
            return f.matrix
        with no_autocast(f.outer[0].device.type):
            m = torch.bmm(f.outer[0], f.inner[0].transpose(1, 2))
            for outer, inner in zip(f.outer[1:], f.inner[1:]):
                m = torch.baddbmm(m, outer, inner.transpose(1, 2))
        return m
