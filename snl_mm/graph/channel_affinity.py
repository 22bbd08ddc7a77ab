"""The channel-aware affinity of the compact generalized nonlocal block (CGNL, Yue et al. 2018).

CGNL's graph has one node per (channel, position) pair of a channel group: with ``theta``, ``phi`` of a group
flattened to vectors ``t``, ``p`` of length ``M = c N`` (channel-major: index ``k = channel * N + position``),
the affinity is the ``M x M`` matrix ``A_kl = s f(t_k, p_l)`` and the block filters ``vec(g)`` with it. Both
kernels have a finite-rank form, so ``A vec(g)`` costs ``O(M)`` and ``A`` is never formed:

* ``'dot'``: ``f(a, b) = a b``, so ``A = s t p^T`` (rank 1) and ``A vec(g) = s t (p . g)``;
* ``'gaussian'``: the RBF ``exp(-gamma (a - b)^2) = exp(-gamma a^2) exp(-gamma b^2) exp(2 gamma a b)``, whose
  last factor is expanded in its Taylor series up to ``(2 gamma a b)^P / P!`` (``P = order``) and whose first
  two factors are replaced by the constant ``beta = exp(-2 gamma)`` (their value for ``a^2 = b^2 = 1``, the
  simplification of the CGNL reference implementation, which keeps the higher powers un-normalised):
  ``f(a, b) = sum_{n=0}^{P} alpha_n a^n b^n`` with ``alpha_n = beta (2 gamma)^n / n!``, i.e. rank ``P + 1``
  with features ``sqrt(alpha_n) a^n``.

``s`` is ``1 / sqrt(M)`` with ``use_scale`` (the reference implementation's option), else 1. The kernel is
not normalised (no degree): Table 1 of the paper lists CGNL's affinity as the raw ``M^f``.
"""
import math

import torch
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .low_rank import LowRankOperator
from .precision import float32, no_autocast

CHANNEL_KERNELS = ('dot', 'gaussian')


def taylor_features(x: Tensor, order: int, gamma: float) -> Tensor:
    """The Taylor feature map of the Gaussian kernel: ``sqrt(alpha_n) x^n`` for ``n = 0 .. order``.

    Args:
        x (Tensor): values of any shape ``(...)``.
        order (int): the highest power ``P >= 1``.
        gamma (float): the RBF's ``gamma > 0``.

    Returns:
        Tensor: ``(..., P + 1)`` with ``feat(a) . feat(b) = sum_n beta (2 gamma)^n / n! a^n b^n``.
    """
    beta = math.exp(-2.0 * gamma)
    # powers by repeated products: x.pow(0) has a NaN gradient at x = 0
    powers = [torch.ones_like(x)]
    for _ in range(order):
        powers.append(powers[-1] * x)
    coefficients = x.new_tensor(
        [math.sqrt(beta * (2.0 * gamma) ** n / math.factorial(n)) for n in range(order + 1)])
    return torch.stack(powers, dim=-1) * coefficients


@torch.fx.wrap
def channel_features(v: Tensor, kernel: str, order: int, gamma: float) -> Tensor:
    """``(B', M) -> (B', M, rank)``: the feature map of a channel kernel, in float32 at least (the Taylor powers
    of the Gaussian kernel grow as ``|v|^order``)."""
    with no_autocast(v.device.type):
        v = float32(v)
        if kernel == 'dot':
            return v.unsqueeze(-1)
        return taylor_features(v, order, gamma)


class ChannelAffinity:
    """The configurable channel-aware affinity of CGNL.

    Args:
        kernel (str): ``'dot'`` or ``'gaussian'`` (Taylor-expanded RBF).
        order (int): the highest Taylor power ``P >= 1`` of the Gaussian kernel (``P + 1`` terms).
        gamma (float): the Gaussian kernel's ``gamma > 0``. Default: ``1e-4`` (the reference value).
        use_scale (bool): divide by ``sqrt(M)``, ``M`` the number of (channel, position) nodes.
    """

    def __init__(self,
                 kernel: str = 'dot',
                 order: int = 3,
                 gamma: float = 1e-4,
                 use_scale: bool = False):
        if kernel not in CHANNEL_KERNELS:
            raise ValueError(f'channel affinity kernel must be one of {CHANNEL_KERNELS}, got {kernel!r}')
        if not isinstance(order, int) or isinstance(order, bool) or order < 1:
            raise ValueError(f'channel affinity order (highest Taylor power) must be an integer >= 1, got '
                             f'{order!r}')
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0 \
                or not math.isfinite(gamma):
            raise ValueError(f'channel affinity gamma must be a finite number > 0, got {gamma!r}')
        if not isinstance(use_scale, bool):
            raise TypeError(f'channel affinity use_scale must be a bool, got {use_scale!r}')
        self.kernel = kernel
        self.order = order
        self.gamma = float(gamma)
        self.use_scale = use_scale

    @property
    def rank(self) -> int:
        """The rank of ``A`` (features per node)."""
        return 1 if self.kernel == 'dot' else self.order + 1

    #: ``A`` as the paper's Table 1 writes it: the raw kernel over (channel, position) nodes
    notation = 'M^f'

    def __repr__(self) -> str:
        return (f'ChannelAffinity(kernel={self.kernel!r}, order={self.order}, gamma={self.gamma}, '
                f'use_scale={self.use_scale})')

    def features(self, v: Tensor) -> Tensor:
        """``(B', M) -> (B', M, rank)``: the kernel's feature map (float32 at least)."""
        return channel_features(v, self.kernel, self.order, self.gamma)

    def __call__(self, t: Tensor, p: Tensor) -> LowRankOperator:
        """The ``(B', M, M)`` affinity of the flattened group vectors ``t`` and ``p``, each ``(B', M)``.

        ``B'`` runs over batch and groups; the operator multiplies ``(B', M, c)`` signals in ``O(M c rank)``, in
        float32 at least: its products are sums over all ``M`` nodes (:mod:`snl_mm.graph.precision`).
        """
        if not is_fx_symbolic_tracing() and (t.dim() != 2 or t.shape != p.shape):
            raise ValueError('channel affinity expects t and p of one shape (B, M), got '
                             f'{tuple(t.shape)} and {tuple(p.shape)}')
        scale = t.shape[1] ** -0.5 if self.use_scale else 1.0
        return LowRankOperator(self.features(t), self.features(p), scale, symmetrize=False,
                               normalize='none', path='factored', half_products=False)
