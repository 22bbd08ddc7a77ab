"""Chebyshev graph filters: the paper's unified form (Eq. 4), ``F(A, Z) = sum_k T_k(A) Z W_k``.

``T_0(A) = I``, ``T_1(A) = A``, ``T_k(A) = 2 A T_{k-1}(A) - T_{k-2}(A)``.

Sign convention: the paper expands the filter in the rescaled Laplacian ``L~ = 2 L / lambda_max - I``, which
for a normalised Laplacian (``lambda_max = 2``) is ``L~ = -A``. Since ``T_k(-x) = (-1)^k T_k(x)``, a filter in
``L~`` equals one in ``A`` with the signs of the odd-order weights flipped; the weights are learned, so the
package expands in ``A`` throughout and every ``W_k`` here multiplies ``T_k(A)``.

Each nonlocal block is a choice of which terms it keeps and how it shares their weights:

* NL, A2, CGNL, CC: the single term ``T_1(A) Z W`` (``terms=(1,)``);
* NS: ``(T_1(A) - T_0(A)) Z W``: two terms sharing one weight with coefficients ``(-1, 1)``;
* SNL: ``Z W_1 + A Z W_2`` (``order=2``, all terms, own weights); gSNL: ``order=K``.

This module is parameter-free: blocks own the weights (and their checkpoint keys) and pass them in.
"""
from typing import Callable, List, Optional, Sequence

from torch import Tensor

MatMul = Callable[[Tensor], Tensor]


def _term(k: int) -> str:
    """``T_k(A) Z`` as Table 1 writes it: ``Z``, ``A Z``, ``T_k(A) Z``."""
    return {0: 'Z', 1: 'A Z'}.get(k, f'T_{k}(A) Z')


def chebyshev_basis(apply_a: MatMul, z: Tensor, order: int) -> List[Tensor]:
    """``[T_0(A) z, T_1(A) z, ..., T_{order-1}(A) z]`` with ``order - 1`` applications of ``A``.

    Args:
        apply_a (callable): ``z -> A z`` on ``(B, N, c)`` signals.
        z (Tensor): the node features ``(B, N, c)``.
        order (int): number of terms ``K >= 1``.
    """
    if order < 1:
        raise ValueError(f'order must be >= 1, got {order}')
    terms = [z]
    if order > 1:
        terms.append(apply_a(z))
    for _ in range(2, order):
        terms.append(2 * apply_a(terms[-1]) - terms[-2])
    return terms


class FilterSpec:
    """Which Chebyshev terms a filter keeps and how their weights are shared.

    Args:
        order (int): ``K``, the number of terms ``T_0 .. T_{K-1}`` considered (``>= 1``).
        terms (sequence[int], optional): the terms that are kept; all ``range(order)`` by default.
        shared_coefficients (sequence[float], optional): when given, one weight ``W`` is shared by the kept
            terms: ``F = (sum_i c_i T_{terms[i]}(A) Z) W``. NS is ``terms=(0, 1)``,
            ``shared_coefficients=(-1, 1)``.
    """

    def __init__(self,
                 order: int = 2,
                 terms: Optional[Sequence[int]] = None,
                 shared_coefficients: Optional[Sequence[float]] = None):
        if not isinstance(order, int) or order < 1:
            raise ValueError(f'order must be an integer >= 1, got {order!r}')
        terms = tuple(range(order)) if terms is None else tuple(terms)
        if not terms or any(not isinstance(t, int) or not 0 <= t < order for t in terms) \
                or len(set(terms)) != len(terms):
            raise ValueError(f'terms must be distinct indices in range(order={order}), got {terms!r}')
        if shared_coefficients is not None:
            shared_coefficients = tuple(float(c) for c in shared_coefficients)
            if len(shared_coefficients) != len(terms):
                raise ValueError(f'shared_coefficients needs one value per kept term {terms}, got '
                                 f'{shared_coefficients!r}')
        self.order = order
        self.terms = terms
        self.shared_coefficients = shared_coefficients

    @property
    def num_weights(self) -> int:
        return 1 if self.shared_coefficients is not None else len(self.terms)

    @property
    def notation(self) -> str:
        """The filter as the paper's Table 1 writes it (``'A Z W'``, ``'-Z W + A Z W'``, ``'Z W_1 + A Z W_2'``)."""
        if self.shared_coefficients is not None:
            parts = [(c, f'{_term(t)} W') for c, t in zip(self.shared_coefficients, self.terms)]
        elif len(self.terms) == 1:
            parts = [(1.0, f'{_term(self.terms[0])} W')]
        else:
            parts = [(1.0, f'{_term(t)} W_{t + 1}') for t in self.terms]
        text = ''
        for coef, body in parts:
            magnitude = '' if abs(coef) == 1 else f'{abs(coef):g} '
            sign = '-' if coef < 0 else '+'
            text += (f'{sign}{magnitude}{body}' if not text else f' {sign} {magnitude}{body}') \
                if (text or coef < 0) else f'{magnitude}{body}'
        return text

    @property
    def needed_order(self) -> int:
        """Terms up to the highest kept one must be computed."""
        return max(self.terms) + 1

    def __repr__(self) -> str:
        return (f'FilterSpec(order={self.order}, terms={self.terms}, '
                f'shared_coefficients={self.shared_coefficients})')


def graph_filter(apply_a: MatMul, z: Tensor, spec: FilterSpec,
                 weights: Sequence[MatMul]) -> Tensor:
    """``F(A, Z)`` for one filter spec.

    Args:
        apply_a (callable | GraphOperator): ``z -> A z`` on ``(B, N, c)`` signals, or a graph operator, whose
            ``chebyshev_basis`` gives the terms (through a small core where it has one).
        z (Tensor): node features ``(B, N, c)``.
        spec (FilterSpec): kept terms and weight sharing.
        weights (sequence[callable]): ``spec.num_weights`` maps, in the order of ``spec.terms``, from the
            ``(B, N, c)`` signals ``T_k(A) Z`` to the caller's output layout (the blocks' map the signals to their
            ``(B, C, N, 1)`` output maps with a 1x1 convolution); all must return one shape.

    Returns:
        Tensor: the sum of the weighted terms, in the layout the weights return.
    """
    if len(weights) != spec.num_weights:
        raise ValueError(f'{spec} needs {spec.num_weights} weights, got {len(weights)}')
    if hasattr(apply_a, 'chebyshev_basis'):  # a graph operator: its own route to the powers of A
        basis = apply_a.chebyshev_basis(z, spec.needed_order)
    else:
        basis = chebyshev_basis(apply_a, z, spec.needed_order)
    kept = [basis[t] for t in spec.terms]
    if spec.shared_coefficients is not None:
        mixed = sum(c * t for c, t in zip(spec.shared_coefficients, kept))
        return weights[0](mixed)
    out = weights[0](kept[0])
    for w, t in zip(weights[1:], kept[1:]):
        out = out + w(t)
    return out
