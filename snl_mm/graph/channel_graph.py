"""A graph over channels: DANet's channel attention (CAM, Fu et al. 2019).

The vertices are the ``c`` channels, and each vertex's feature is its map over the ``N`` positions: the node
features of an input ``X`` (``N x c`` in token layout) are the rows of ``X^T``. The edges are the ``c x c`` energies
summed over positions, ``E = Q^T K`` (``Q = K = X`` for CAM), and the affinity is a softmax over each channel's
row:

* ``negate=True`` (DANet): ``A = softmax_d(max_d E_cd - E_cd)``, the same as ``softmax_d(-E_cd)`` (a softmax does
  not change when a row's constant is added) computed as the upstream module does, so that a channel attends most
  to the channels it correlates with least;
* ``negate=False``: ``A = softmax_d(E_cd)``.

``A`` multiplies the node features: ``A X^T`` (``c x N``), i.e. ``X A^T`` in token layout. Higher Chebyshev
orders are powers of the ``c x c`` matrix applied to the features (``T_k(A) X^T``, each ``O(c^2 N)``). Memory:
``O(c^2 + N c)``, never ``N x N``.

The energies are sums over all ``N`` positions (``~1e4`` for unit activations at ``N = 4096``): they and the softmax
run in float32 under autocast and for half-precision modules (:mod:`snl_mm.graph.precision`). ``A`` is
row-stochastic, so its product with the features runs in the compute dtype: each output is a convex combination of
one position's channels.

The energies span thousands (``E_cc`` is a channel's squared norm over all positions), so most of a row's weights
underflow: below float32's smallest normal number they are denormal floats, whose products x86 CPUs compute in
microcode (measured: mmsegmentation's ``CAM`` at (2, 512, 64, 64), one thread, spends 98% of a training step in its
matrix products, 9.7 s, against 1.0 s with denormals flushed to zero). Weights below
``e^-60`` of their row's largest (:data:`NEGLIGIBLE_LOGIT`) are set to 0 instead: they change no output by more than
``1e-26`` of its size, far below float32's resolution, and no gradient (a dropped weight's gradient is as small).
"""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .affinity import register_affinity
from .operator import GraphOperator, resolve_scale
from .precision import compute_dtype, float32, no_autocast

#: logits this far below their row's largest get weight 0 (``e^-60 = 8.8e-27``: invisible in float32, and no
#: denormal float enters a product)
NEGLIGIBLE_LOGIT = -60.0
#: subtracted from the logits of negligible weights: their exponential is exactly 0
DROP = 1e30


class Gram(torch.autograd.Function):
    """``X X^T`` for ``X`` ``(B, c, N)``, whose backward is one product, ``(G + G^T) X``: autograd would treat the two
    operands as two inputs, two products and two ``c x N`` gradients to add."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.bmm(x, x.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x, ) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), x)


@torch.fx.wrap
def channel_softmax(q: Tensor, k: Tensor, scale: Union[float, str], negate: bool) -> Tensor:
    """``(B, c, c)`` float32 (at least): ``softmax_d(s E_cd)``, or ``softmax_d(max_d(s E_cd) - s E_cd)`` when
    ``negate``, for the energies ``E = q^T k`` of tokens ``q``, ``k`` ``(B, N, c)``."""
    with no_autocast(q.device.type):
        # (B, c, c): the energies, sums over the N positions (CAM: the Gram matrix of the input's channels)
        if q is k and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):  # tracers: plain products
            logits = Gram.apply(float32(q).transpose(1, 2))
        else:
            logits = torch.bmm(float32(q).transpose(1, 2), float32(k))
        s = resolve_scale(scale, q.shape[1])
        if s != 1.0:
            logits = s * logits
        if negate:
            # the row's max is a constant of autograd: the softmax does not change with it (no gradient, nothing
            # saved for the backward)
            logits = logits.detach().amax(dim=-1, keepdim=True) - logits
        with torch.no_grad():
            # weights below e^-60 of the row's largest would be denormal floats: pushed to exactly 0 by a constant
            # (see the module's notes)
            drop = (logits < logits.amax(dim=-1, keepdim=True) + NEGLIGIBLE_LOGIT).to(logits.dtype) * DROP
        return torch.softmax(logits.sub_(drop), dim=-1)


@torch.fx.wrap
def channel_matmul(matrix: Tensor, z: Tensor) -> Tensor:
    """``z A^T`` for signals ``z`` ``(B, N, c)`` in token layout: ``A`` applied to the channel vertices, whose
    features are the columns of ``z``. Computed as ``(A z^T)^T`` in the compute dtype of ``z`` (``A`` is
    row-stochastic, so no sum leaves ``z``'s range), the result laid out channel-major (a transposed view), as the
    ``(B, c, N)`` maps around it."""
    dtype = compute_dtype(z)
    with no_autocast(z.device.type):
        return torch.bmm(matrix.to(dtype), z.to(dtype).transpose(1, 2)).transpose(1, 2)


class ChannelGraphOperator(GraphOperator):
    """The ``(B, c, c)`` affinity of a channel graph: ``matmul(z)`` takes the block's signals in token layout
    ``(B, N, c)`` and returns ``z A^T`` (``A`` acting on the ``c`` channel vertices, ``N`` features each);
    :meth:`dense` is the ``(B, c, c)`` matrix (float32 at least).

    Args:
        matrix (Tensor): the row-stochastic ``(B, c, c)`` affinity.
    """

    def __init__(self, matrix: Tensor):
        self.matrix = matrix

    def matmul(self, z: Tensor) -> Tensor:
        return channel_matmul(self.matrix, z)

    def dense(self) -> Tensor:
        return self.matrix


@register_affinity('channel_graph')
class ChannelGraph:
    """The channel graph: ``A = softmax_d(-s E_cd)`` (DANet's CAM) or ``softmax_d(s E_cd)``, ``E = Q^T K`` over
    channels (:mod:`snl_mm.graph.channel_graph`).

    Called as ``graph(q, k, spatial)`` with tokens ``q``, ``k`` ``(B, N, c)`` (CAM: both the input itself), it returns
    a :class:`ChannelGraphOperator` that multiplies ``(B, N, c)`` signals over their channels. In
    :class:`~snl_mm.blocks.GraphNonlocalBlock` (``affinity=dict(type='channel_graph')``) the graph is over the ``Cs``
    channels of ``theta`` and ``phi`` and filters the ``Cs`` channels of ``g``.

    Args:
        negate (bool): DANet's sign, ``softmax(max(E) - E)``. Default: True.
        scale (float | str): ``s``, or ``'inv_sqrt'`` for ``1 / sqrt(N)`` (the energies are sums over positions).
            Default: 1 (DANet's).
    """

    def __init__(self, negate: bool = True, scale: Union[float, str] = 1.0):
        if not isinstance(negate, bool):
            raise TypeError(f'channel graph negate must be True or False, got {negate!r}')
        if not (scale == 'inv_sqrt' or (isinstance(scale, (int, float)) and not isinstance(scale, bool)
                                        and scale > 0)):
            raise ValueError(f"channel graph scale must be a number > 0 or 'inv_sqrt', got {scale!r}")
        self.negate = negate
        self.scale = scale

    @property
    def notation(self) -> str:
        """``A`` as Table 1 writes it: a softmax over each channel's row, ``E = X^T X`` the channel energies."""
        return 'D_M^-1 M, M = exp(-E)' if self.negate else 'D_M^-1 M, M = exp(E)'

    def __repr__(self) -> str:
        return f'ChannelGraph(negate={self.negate}, scale={self.scale!r})'

    def __call__(self, q: Tensor, k: Tensor, spatial: Optional[Sequence[int]] = None) -> ChannelGraphOperator:
        """The channel graph of tokens ``q``, ``k`` ``(B, N, c)`` (one shape); ``spatial`` is not needed."""
        if not is_fx_symbolic_tracing() and (q.dim() != 3 or q.shape != k.shape):
            raise ValueError('channel graph expects q and k of one shape (B, N, c), got '
                             f'{tuple(q.shape)} and {tuple(k.shape)}')
        return ChannelGraphOperator(channel_softmax(q, k, self.scale, self.negate))
