"""Graph operators: ``A`` of one input, as an object that multiplies signals by it.

Every operator keeps its arithmetic in module-level functions that ``torch.fx`` treats as leaves
(``torch.fx.wrap``): a symbolic trace records one call per function instead of failing on the shape-dependent
choices inside (the order of products, the padding of fused attention), and the traced graph runs them with
real tensors. ``torch.compile`` and ``torch.export`` trace through them as ordinary Python.
"""
import math
from typing import List, NamedTuple, Sequence, Union

import torch
from torch import Tensor

from .filters import chebyshev_basis
from .precision import compute_dtype, no_autocast


def inverse_power(degree: Tensor, power: float) -> Tensor:
    """``degree ** -power`` with ``0`` where the degree is not positive (an isolated node, not a NaN)."""
    positive = degree > 0
    safe = torch.where(positive, degree, torch.ones_like(degree))
    return torch.where(positive, safe.pow(-power), torch.zeros_like(degree))


class TemperedScale(NamedTuple):
    """A kernel scale divided by a temperature (DNL's ``tau``): ``resolve_scale(base, c) / temperature``, resolved
    where the channels are known (inside the operators' functions, also while ``torch.fx`` traces)."""
    base: Union[float, str]
    temperature: float


def resolve_scale(scale: Union[float, str, TemperedScale], channels: int) -> float:
    """``s`` of a kernel: a number, ``'inv_sqrt'`` for ``1 / sqrt(channels)``, or a :class:`TemperedScale`."""
    if isinstance(scale, TemperedScale):
        return resolve_scale(scale.base, channels) / scale.temperature
    return 1.0 / math.sqrt(channels) if scale == 'inv_sqrt' else float(scale)


class GraphOperator:
    """``A`` for one input: multiplies signals by it, and can show it densely.

    Subclasses implement :meth:`matmul` (``(B, N_k, c) -> (B, N_q, c)``, returned in the compute dtype of the
    signal, float32 for products kept out of half precision altogether: :mod:`snl_mm.graph.precision`) and
    :meth:`dense` (float32 at least, for analysis).
    """

    def matmul(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def dense(self) -> Tensor:
        raise NotImplementedError

    def chebyshev_basis(self, z: Tensor, order: int) -> List[Tensor]:
        """``[T_0(A) z, ..., T_{order-1}(A) z]`` (:func:`~snl_mm.graph.filters.graph_filter` asks for them): the
        recurrence on :meth:`matmul`; an operator with a small core (pooled anchors) runs it there."""
        return chebyshev_basis(self.matmul, z, order)

    def __matmul__(self, z: Tensor) -> Tensor:
        return self.matmul(z)


@torch.fx.wrap
def dense_matmul(matrix: Tensor, z: Tensor, bounded: bool) -> Tensor:
    """``matrix @ z`` for a formed ``(B, N_q, N_k)`` affinity (float32 at least) and signals ``(B, N_k, c)``.

    The product runs in the compute dtype of ``z`` when that cannot overflow: for a ``bounded`` affinity
    (normalised, entries in ``[0, 1]``) or a dtype with float32's range; an unbounded affinity under float16
    multiplies in float32. The result is returned in the compute dtype, the dtype of the layers after it.
    """
    dtype = compute_dtype(z)
    products = matrix.dtype if dtype == torch.float16 and not bounded else dtype
    with no_autocast(z.device.type):
        return torch.bmm(matrix.to(products), z.to(products)).to(dtype)


class DenseOperator(GraphOperator):
    """An explicitly formed ``(B, N_q, N_k)`` affinity (float32 at least).

    Args:
        matrix (Tensor): the affinity.
        bounded (bool): whether its entries lie in ``[0, 1]`` (a normalised affinity), which lets its product run
            in float16.
    """

    def __init__(self, matrix: Tensor, bounded: bool = False):
        self.matrix = matrix
        self.bounded = bounded

    def matmul(self, z: Tensor) -> Tensor:
        return dense_matmul(self.matrix, z, self.bounded)

    def dense(self) -> Tensor:
        return self.matrix


class SumOperator(GraphOperator):
    """``A = A_1 + A_2 + ...``: the sum of graph operators of one input (DNL: pairwise plus unary term).

    Args:
        operators (GraphOperator): the terms, all ``(B, N_q, N_k)``.
    """

    def __init__(self, *operators: GraphOperator):
        if not operators:
            raise ValueError('SumOperator needs at least one operator')
        self.operators: Sequence[GraphOperator] = operators

    def matmul(self, z: Tensor) -> Tensor:
        out = self.operators[0].matmul(z)
        for op in self.operators[1:]:
            out = out + op.matmul(z)
        return out

    def dense(self) -> Tensor:
        out = self.operators[0].dense()
        for op in self.operators[1:]:
            out = out + op.dense()
        return out


@torch.fx.wrap
def split_heads(t: Tensor, heads: int) -> Tensor:
    """``(B, N, h c) -> (B h, N, c)``: the channels of each head as a batch element of its own."""
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2).reshape(b * heads, n, c // heads)


@torch.fx.wrap
def merge_heads(t: Tensor, heads: int) -> Tensor:
    """``(B h, N, c) -> (B, N, h c)``: the inverse of :func:`split_heads`."""
    bh, n, c = t.shape
    return t.reshape(bh // heads, heads, n, c).transpose(1, 2).reshape(bh // heads, n, heads * c)


class MultiHeadOperator(GraphOperator):
    """One graph per head: the channels of a signal are split into ``heads`` groups, group ``i`` is multiplied by
    the ``i``-th head's affinity (a block-diagonal operator over (head, position) nodes).

    Args:
        operator (GraphOperator): the heads' affinities as one operator over a batch of ``B * heads``, head ``i``
            of sample ``b`` at ``b * heads + i`` (:func:`split_heads`).
        heads (int): the number of heads; divides the channels of every signal.
    """

    def __init__(self, operator: GraphOperator, heads: int):
        self.operator = operator
        self.heads = heads

    def matmul(self, z: Tensor) -> Tensor:
        return merge_heads(self.operator.matmul(split_heads(z, self.heads)), self.heads)

    def dense(self) -> Tensor:
        """The heads' affinities, ``(B, heads, N_q, N_k)``."""
        a = self.operator.dense()
        return a.reshape(a.shape[0] // self.heads, self.heads, *a.shape[1:])
