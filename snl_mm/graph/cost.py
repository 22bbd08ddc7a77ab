"""The cost model that picks an order of products for a low-rank affinity.

For a kernel of rank ``c`` (``M = P Q^T`` with ``P, Q`` of shape ``(N, c)``) applied to a signal ``Z`` of
``c_z`` channels, two exact orders exist (:class:`~snl_mm.graph.affinity.LowRankOperator` implements both):

* dense: form ``M`` (``2 N^2 c`` flops), symmetrise it, take its row sums and scale rows and columns
  (``~4 N^2``, three for an unsymmetrised kernel), multiply (``2 N^2 c_z``): time and memory quadratic in
  ``N``. This is the official SNL code's order;
* factored: the normalisation is folded into the factors (``D^-1/2 P``, ``D^-1/2 Q``, ``O(N c)``), then
  ``P (Q^T Z)`` (``4 N c c_z`` flops, twice that when the kernel is symmetrised) and the degrees
  ``P (Q^T 1)`` (``4 N c``): linear in ``N``.

The model compares the two flop counts per call; the order with fewer flops is taken. For SNL
(symmetrised, ``c = c_z``) the crossing is at ``N ~ 2 c``: ``Cs = 512`` takes the dense order at an
ImageNet res4 map (``N = 196``) and the factored order from ``N ~ 1024`` on. A dense affinity also has to fit
in memory: past ``dense_limit_bytes`` the factored order is taken whatever the flop count says.

Measured on a 2-core CPU (``tools/analysis/benchmark_blocks.py --compare-paths``: forward + backward of
``SNLBlock`` with ``path='dense'`` and ``'factored'``, interleaved; ``docs/performance.md``), the orders cross
where the model says: dense / factored time 0.72 at ``N = 196``, 0.98 at 784, 1.09 at 1024, 1.45 at 2304 for
``Cs = 512``; 1.00 at ``N = 576`` for ``Cs = 256``; 0.97 at ``N = 144`` for ``Cs = 64``. At no measured point
is the model's choice more than 9% slower than the other order. Both orders are GEMM-bound, so the flop
count is the model, with no calibration constant. ``path='dense'`` / ``'factored'`` overrides it (benchmarks,
tests).
"""
from typing import Literal

Path = Literal['auto', 'dense', 'factored']
PATHS = ('auto', 'dense', 'factored')

#: largest dense (B, N, N) float32 affinity the cost model allows (bytes).
DENSE_LIMIT_BYTES = 1 << 30


def dense_flops(n_q: int, n_k: int, rank: int, value_channels: int, symmetric: bool) -> int:
    """Multiply-adds x2 of forming, normalising and applying the dense affinity (per batch element)."""
    form = 2 * n_q * n_k * rank
    normalise = (4 if symmetric else 3) * n_q * n_k
    apply = 2 * n_q * n_k * value_channels
    return form + normalise + apply


def factored_flops(n_q: int, n_k: int, rank: int, value_channels: int, symmetric: bool) -> int:
    """Flops of the factored order ``P (Q^T Z)`` (both orders of the pair when symmetrised)."""
    one_side = 2 * n_k * rank * value_channels + 2 * n_q * rank * value_channels
    degrees = 2 * (n_q + n_k) * rank
    return (2 if symmetric else 1) * (one_side + degrees)


def choose_path(n_q: int,
                n_k: int,
                rank: int,
                value_channels: int,
                symmetric: bool,
                batch: int = 1,
                path: Path = 'auto',
                dense_limit_bytes: int = DENSE_LIMIT_BYTES) -> str:
    """Pick ``'dense'`` or ``'factored'`` for one call.

    Args:
        n_q (int): query positions (rows of the affinity).
        n_k (int): key positions (columns of the affinity).
        rank (int): channels of the kernel factors ``P`` and ``Q``.
        value_channels (int): channels of the signal the affinity multiplies.
        symmetric (bool): whether the kernel is symmetrised (``(M + M^T) / 2``).
        batch (int): batch size, for the memory bound.
        path (str): ``'auto'`` lets the model decide; ``'dense'`` / ``'factored'`` force an order
            (benchmarks, tests).
        dense_limit_bytes (int): the largest dense float32 affinity allowed on the ``'auto'`` path.

    Returns:
        str: ``'dense'`` or ``'factored'``.
    """
    if path not in PATHS:
        raise ValueError(f'path must be one of {PATHS}, got {path!r}')
    if path != 'auto':
        return path
    if batch * n_q * n_k * 4 > dense_limit_bytes:
        return 'factored'
    dense = dense_flops(n_q, n_k, rank, value_channels, symmetric)
    factored = factored_flops(n_q, n_k, rank, value_channels, symmetric)
    return 'factored' if factored < dense else 'dense'
