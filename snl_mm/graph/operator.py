"""Graph operators: ``A`` of one input, as an object that multiplies signals by it.

Every operator keeps its arithmetic in module-level functions that ``torch.fx`` treats as leaves
(``torch.fx.wrap``): a symbolic trace records one call per function instead of failing on the shape-dependent
choices inside (the order of products, the padding of fused attention), and the traced graph runs them with
real tensors. ``torch.compile`` and ``torch.export`` trace through them as ordinary Python.
"""
import math
from typing import Union

import torch
from torch import Tensor

from .precision import compute_dtype, no_autocast


def inverse_power(degree: Tensor, power: float) -> Tensor:
    """``degree ** -power`` with ``0`` where the degree is not positive (an isolated node, not a NaN)."""
    positive = degree > 0
    safe = torch.where(positive, degree, torch.ones_like(degree))
    return torch.where(positive, safe.pow(-power), torch.zeros_like(degree))


def resolve_scale(scale: Union[float, str], channels: int) -> float:
    """``s`` of a kernel: a number, or ``'inv_sqrt'`` for ``1 / sqrt(channels)``."""
    return 1.0 / math.sqrt(channels) if scale == 'inv_sqrt' else float(scale)


class GraphOperator:
    """``A`` for one input: multiplies signals by it, and can show it densely.

    Subclasses implement :meth:`matmul` (``(B, N_k, c) -> (B, N_q, c)``, in the dtype of the products:
    :mod:`snl_mm.graph.precision`) and :meth:`dense` (float32 at least, for analysis).
    """

    def matmul(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def dense(self) -> Tensor:
        raise NotImplementedError

    def __matmul__(self, z: Tensor) -> Tensor:
        return self.matmul(z)


@torch.fx.wrap
def dense_matmul(matrix: Tensor, z: Tensor, bounded: bool) -> Tensor:
    """``matrix @ z`` for a formed ``(B, N_q, N_k)`` affinity (float32 at least) and signals ``(B, N_k, c)``.

    The product runs in the compute dtype of ``z`` when that cannot overflow: for a ``bounded`` affinity
    (normalised, entries in ``[0, 1]``) or a dtype with float32's range; an unbounded affinity under float16
    multiplies in float32.
    """
    dtype = compute_dtype(z)
    if dtype == torch.float16 and not bounded:
        dtype = matrix.dtype
    with no_autocast(z.device.type):
        return torch.bmm(matrix.to(dtype), z.to(dtype))


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

