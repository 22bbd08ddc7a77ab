"""Expectation-maximisation bases: the rank-``K`` affinity of EMANet (Li et al. 2019).

``K`` bases ``mu`` (``c x K``, unit columns) are fitted to the features ``X`` (``N x c``, token layout) of one
input by ``T`` EM iterations, starting from the bases' moving average (a buffer):

* E step: ``Z = softmax_K(X mu)`` (``N x K``: each position's responsibilities over the bases);
* M step: ``Z~ = Z D_Z^-1`` (each basis's responsibilities L1-normalised over the positions), ``mu = X^T Z~``, then
  each basis L2-normalised over the channels: ``mu = X^T Z~ D_mu^-1``, ``D_mu = diag(||X^T Z~_k||)``.

The block's output is the reconstruction ``Z mu^T = Z D_mu^-1 Z~^T X``, ``Z`` from the last E step and ``mu`` from
the last M step: an affinity ``A = Z D_mu^-1 Z~^T`` (``N x N``, non-negative, rank ``K``) applied to the features.
It is applied through its factors, ``A z = Z (D_mu^-1 Z~^T z)`` (:class:`~snl_mm.graph.low_rank.LowRankOperator`,
``O(N K c)``), never formed; applied to the features the EM ran on, it is the reconstruction ``Z mu^T`` itself
(mmsegmentation's product). Every normalisation of the low-rank operators applies: SNL's symmetric one,
``D^-1/2 (A + A^T) / 2 D^-1/2`` with the degrees ``d = (P (Q^T 1) + Q (P^T 1)) / 2`` from the factors ``P = Z``,
``Q = Z~ D_mu^-1`` (``O(N K)``), or the random-walk ``D^-1 A``; every Chebyshev order goes through the factors.

As mmsegmentation's ``EMAModule`` (1.2.2): the L1 and L2 normalisations are ``F.normalize`` (``eps = 1e-12``);
in training the moving average moves towards the batch's final bases (their mean over the batch, averaged over the
processes when distributed, L2-normalised): ``bases <- (1 - momentum) bases + momentum mu``; in evaluation it only
starts the iterations. The iterations run without gradient (``grad='none'``, upstream): ``A`` is then a constant
of autograd, and only the signal it multiplies receives a gradient (through ``A^T``). ``grad='full'``
differentiates through the iterations as well.

Features that are an affine map of an input, ``X = Y W^T + b`` (a frozen 1x1 convolution, EMANet's
``ema_mid_conv``), need not be formed: the iterations need only ``X mu`` and ``X^T Z~``, and the map folds into the
bases (:func:`em_iterations` with ``weight`` and ``bias``), while ``A X`` is the reconstruction ``Z mu^T``
(:meth:`EMOperator.reconstruction`).

Precision: the iterations (sums over all ``N`` positions) run in float32 under autocast and for half-precision
modules; the products with the signal in its compute dtype (the reconstruction's entries are bounded by the unit
bases; other signals go through the low-rank operator's float16 rebalancing, :mod:`snl_mm.graph.precision`).
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from snl_mm.utils import check_positive_int
from .affinity import register_affinity
from .low_rank import LowRankFactors, LowRankOperator, low_rank_matmul
from .precision import compute_dtype, float32, no_autocast

#: how the EM affinity is normalised: none (EMANet's), ``D^-1 A``, or SNL's ``D^-1/2 (A + A^T) / 2 D^-1/2``
EM_NORMALIZATIONS = ('none', 'random_walk', 'symmetric')
#: what is differentiated: nothing of the EM iterations (upstream), or everything
EM_GRADS = ('none', 'full')


@torch.fx.wrap
def em_iterations(x: Tensor, bases: Tensor, num_stages: int, differentiable: bool, weight: Optional[Tensor] = None,
                  bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``num_stages`` EM iterations on features ``x`` ``(B, N, c)`` from ``bases`` ``(1, c, K)``, float32 (at
    least), under ``no_grad`` unless ``differentiable``.

    With ``weight`` ``(c, C)`` (and ``bias`` ``(c,)``, optional), ``x`` ``(B, N, C)`` is the input of an affine map
    and the iterations run on its features ``x W^T + b`` without forming them: ``(x W^T + b) mu = x (W^T mu) +
    b^T mu`` and ``(x W^T + b)^T Z~ = W (x^T Z~) + b (1^T Z~)`` cost ``O(N C K)`` as on formed features, and the
    ``O(N C c)`` product that would form them is saved.

    Returns:
        tuple: the last responsibilities ``Z`` ``(B, N, K)``, the right factor ``Z~ D_mu^-1`` ``(B, N, K)``, the
        bases the last E step used ``(B, c, K)`` and the final bases ``mu`` ``(B, c, K)``.
    """
    with no_autocast(x.device.type), torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        x = float32(x)
        if weight is not None:
            weight = weight.to(x.dtype)
            bias = None if bias is None else bias.to(x.dtype)
        mu = bases.to(x.dtype).repeat(x.shape[0], 1, 1)  # a copy: the buffer moves after this call
        previous, raw = mu, mu
        for _ in range(num_stages):
            previous = mu
            logits = torch.bmm(x, mu if weight is None else torch.matmul(weight.t(), mu))
            if bias is not None:
                logits = logits + torch.matmul(bias, mu).unsqueeze(1)
            z = torch.softmax(logits, dim=2)
            z_tilde = F.normalize(z, dim=1, p=1)
            raw = torch.bmm(x.transpose(1, 2), z_tilde)
            if weight is not None:
                raw = torch.matmul(weight, raw)
                if bias is not None:  # the columns of Z~ sum to 1 (to 0 where a column underflowed)
                    raw = raw + bias[:, None] * z_tilde.sum(dim=1, keepdim=True)
            mu = F.normalize(raw, dim=1, p=2)
        inverse_norm = 1.0 / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)  # F.normalize's denominator
        # in place where nothing is differentiated (z_tilde is saved for the backward of the last M step otherwise)
        weights = z_tilde * inverse_norm if torch.is_grad_enabled() else z_tilde.mul_(inverse_norm)
        return z, weights, previous, mu


@torch.fx.wrap
def em_responsibilities(q: Tensor, bases: Tensor, differentiable: bool) -> Tensor:
    """``softmax_K(q mu)`` ``(B, N_q, K)`` of queries ``q`` ``(B, N_q, c)`` other than the features the EM ran on,
    float32 (at least)."""
    with no_autocast(q.device.type), torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        q = float32(q)
        return torch.softmax(torch.bmm(q, bases.to(q.dtype)), dim=2)


def reduce_mean(t: Tensor) -> Tensor:
    """The mean of ``t`` over the processes of the default group (``t`` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.clone()
    dist.all_reduce(t.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return t


@torch.fx.wrap
def update_moving_average(affinity: 'EMAffinity', bases: Tensor) -> None:
    """In training, move ``affinity.bases`` ``(1, c, K)`` in place towards the batch's bases ``(B, c, K)``, as
    mmsegmentation's ``EMAModule``: their mean over the batch and the processes, L2-normalised, with weight
    ``affinity.momentum``. The mode is read when the call runs (also in a ``torch.fx`` graph, which records this
    function as one call on the module)."""
    if not affinity.training:
        return
    buffer, momentum = affinity.bases, affinity.momentum
    with torch.no_grad(), no_autocast(buffer.device.type):
        target = reduce_mean(bases.detach().mean(dim=0, keepdim=True))
        target = F.normalize(target, dim=1, p=2)
        current = buffer.to(target.dtype)
        buffer.copy_((1 - momentum) * current + momentum * target)


@torch.fx.wrap
def em_reconstruction(responsibilities: Tensor, bases: Tensor, like: Tensor) -> Tensor:
    """The reconstruction ``Z mu^T`` ``(B, N, c)`` of responsibilities ``Z`` ``(B, N, K)`` and bases ``mu``
    ``(B, c, K)`` in the compute dtype of ``like`` (its entries are bounded by the unit bases), laid out
    channel-major as the low-rank products."""
    dtype = compute_dtype(like)
    with no_autocast(bases.device.type):
        return torch.bmm(bases.to(dtype), responsibilities.to(dtype).transpose(1, 2)).transpose(1, 2)


@torch.fx.wrap
def em_matmul(factors: LowRankFactors, responsibilities: Tensor, bases: Tensor, z: Tensor,
              features: Optional[Tensor], reconstruct: bool, differentiable: bool) -> Tensor:
    """``A z`` ``(B, N_q, c_z)`` for signals ``z`` ``(B, N_k, c_z)``. Applied to the features the EM ran on (with
    gradients only where the bases carry them), the reconstruction ``Z mu^T`` (upstream's product, in the compute
    dtype), laid out channel-major as the low-rank products."""
    if reconstruct and z is features and (differentiable or not (torch.is_grad_enabled() and z.requires_grad)):
        return em_reconstruction(responsibilities, bases, z)
    return low_rank_matmul(factors, z)


class EMOperator(LowRankOperator):
    """The EM affinity of one input: ``A = Z D_mu^-1 Z~^T``, normalised as asked, applied through its factors.

    Args:
        responsibilities (Tensor): ``Z`` of the queries ``(B, N_q, K)``.
        weights (Tensor): ``Z~ D_mu^-1`` of the keys ``(B, N_k, K)``.
        bases (Tensor): the final bases ``mu`` ``(B, c, K)``.
        keys (Tensor): the tensor the EM ran on ``(B, N_k, *)``: the features, or the input of the affine map folded
            into the iterations (``formed=False``).
        normalize (str): one of :data:`EM_NORMALIZATIONS`.
        differentiable (bool): whether the factors carry gradients.
        formed (bool): whether ``keys`` are the features themselves; then a signal that is this tensor is
            reconstructed.
    """

    def __init__(self, responsibilities: Tensor, weights: Tensor, bases: Tensor, keys: Tensor, normalize: str,
                 differentiable: bool, formed: bool = True):
        super().__init__(responsibilities, weights, 1.0, symmetrize=normalize == 'symmetric', normalize=normalize,
                         path='factored')
        self.bases = bases
        self.keys = keys
        self.features = keys if formed else None
        self.differentiable = differentiable

    def matmul(self, z: Tensor) -> Tensor:
        return em_matmul(self.factors, self.p, self.bases, z, self.features, self.normalize == 'none',
                         self.differentiable)

    def reconstruction(self) -> Tensor:
        """``A Z`` ``(B, N, c)`` for the features ``Z`` the EM ran on, formed or not: the reconstruction ``Z mu^T``
        (``normalize='none'``), in the compute dtype of the keys; a constant of autograd unless the operator is
        differentiable (upstream's ``grad='none'``: the features pass no gradient through ``A Z``)."""
        if self.normalize != 'none':
            raise ValueError(f'EM affinity: the reconstruction Z mu^T is A Z only for normalize="none", not '
                             f'{self.normalize!r}; apply the operator to the features instead')
        return em_reconstruction(self.p, self.bases, self.keys)

    def core(self) -> Tensor:
        """``V^T U`` ``(B, r, r)`` for ``A = U V^T`` (``U``, ``V`` the factors side by side: ``r = K``, ``2 K`` when
        symmetrised), float32 at least: its eigenvalues are the non-zero ones of ``A`` (the rest of ``A``'s
        ``N`` eigenvalues are 0)."""
        outer = torch.cat(self.factors.outer, dim=2)
        inner = torch.cat(self.factors.inner, dim=2)
        with no_autocast(outer.device.type):
            return torch.bmm(inner.transpose(1, 2), outer)


@register_affinity('em')
class EMAffinity(nn.Module):
    """The EM-bases affinity of EMANet: ``A = Z D_mu^-1 Z~^T`` of rank ``K`` (:mod:`snl_mm.graph.em`).

    Called as ``affinity(q, k, spatial)`` with tokens ``q``, ``k`` ``(B, N, c)``: the EM iterations run on the keys
    ``k``; ``Z`` is the keys' last responsibilities when ``q`` is ``k`` (EMANet: one feature map), else the queries'
    ``softmax_K(q mu)`` under the bases of the last E step. Returns an :class:`EMOperator`. In training (and with
    ``update``) the moving average of the bases, the buffer ``bases`` ``(1, c, K)``, moves.

    Args:
        channels (int): ``c``, the channels of the features (filled in by
            :class:`~snl_mm.blocks.GraphNonlocalBlock`: its ``inner_channels``).
        num_bases (int): ``K``. Default: 64 (EMANet's).
        num_stages (int): EM iterations ``T >= 1``. Default: 3 (EMANet's).
        momentum (float): the moving average's weight of a batch's bases, in ``[0, 1]``. Default: 0.1.
        normalize (str): ``'none'`` (EMANet), ``'random_walk'`` (``D^-1 A``) or ``'symmetric'``
            (``D^-1/2 (A + A^T) / 2 D^-1/2``, SNL's). Default: ``'none'``.
        grad (str): ``'none'``: the iterations without gradient, as upstream (``A`` a constant); ``'full'``:
            differentiate through them. Default: ``'none'``.

    The bases start as mmsegmentation's: ``N(0, 2 / K)`` entries, columns L2-normalised.
    """

    def __init__(self,
                 channels: int,
                 num_bases: int = 64,
                 num_stages: int = 3,
                 momentum: float = 0.1,
                 normalize: str = 'none',
                 grad: str = 'none'):
        super().__init__()
        check_positive_int(channels, 'channels', 'EM affinity')
        check_positive_int(num_bases, 'num_bases', 'EM affinity')
        check_positive_int(num_stages, 'num_stages', 'EM affinity', note=' (EM iterations; EMANet uses 3)')
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f'EM affinity: momentum must be a number in [0, 1], got {momentum!r}')
        if normalize not in EM_NORMALIZATIONS:
            raise ValueError(f'EM affinity: normalize must be one of {EM_NORMALIZATIONS}, got {normalize!r}')
        if grad not in EM_GRADS:
            raise ValueError(f'EM affinity: grad must be one of {EM_GRADS}, got {grad!r}')
        self.channels = channels
        self.num_bases = num_bases
        self.num_stages = num_stages
        self.momentum = float(momentum)
        self.normalize = normalize
        self.grad = grad
        bases = torch.zeros(1, channels, num_bases)
        bases.normal_(0, math.sqrt(2. / num_bases))
        self.register_buffer('bases', F.normalize(bases, dim=1, p=2))

    @property
    def differentiable(self) -> bool:
        """Whether ``A`` passes gradients to ``q`` and ``k`` (``grad='full'``); with ``grad='none'`` the embeddings
        it is computed from receive none, and :class:`~snl_mm.blocks.GraphNonlocalBlock` freezes them."""
        return self.grad == 'full'

    @property
    def notation(self) -> str:
        """``A`` as Table 1 writes it: ``Z D_mu^-1 Z~^T`` (the reconstruction's affinity), normalised."""
        m = 'Z D_mu^-1 Z~^T'
        return {'none': m, 'random_walk': f'D_M^-1 M, M = {m}',
                'symmetric': f'D_M^-1/2 M_hat D_M^-1/2, M = {m}'}[self.normalize]

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, num_bases={self.num_bases}, num_stages={self.num_stages}, '
                f'momentum={self.momentum}, normalize={self.normalize!r}, grad={self.grad!r}')

    def forward(self, q: Tensor, k: Tensor, spatial: Optional[Sequence[int]] = None, update: bool = True,
                weight: Optional[Tensor] = None, bias: Optional[Tensor] = None) -> EMOperator:
        """The EM affinity of queries ``q`` and keys ``k`` ``(B, N, c)``; ``spatial`` is not needed. ``update=False``
        leaves the moving average where it is also in training (for analysis).

        With ``weight`` ``(c, C)`` (and ``bias`` ``(c,)``), the keys are the features ``k W^T + b`` of ``k``
        ``(B, N, C)``, never formed (:func:`em_iterations`), and the queries are the keys (``q is k``); the
        operator's :meth:`~EMOperator.reconstruction` is ``A`` applied to them.
        """
        if weight is not None and q is not k:
            raise ValueError('EM affinity: with an affine map of the keys (weight), the queries are the keys: '
                             'pass q is k')
        if not is_fx_symbolic_tracing():
            if weight is not None and (weight.dim() != 2 or weight.shape[0] != self.channels):
                raise ValueError(f'EM affinity (channels={self.channels}) expects weight ({self.channels}, C), got '
                                 f'{tuple(weight.shape)}')
            in_channels = self.channels if weight is None else weight.shape[1]
            if k.dim() != 3 or q.shape != k.shape or k.shape[2] != in_channels:
                raise ValueError(f'EM affinity (channels={self.channels}) expects q and k of one shape '
                                 f'(B, N, {in_channels}), got {tuple(q.shape)} and {tuple(k.shape)}')
        differentiable = self.differentiable
        z, weights, previous, bases = em_iterations(k, self.bases, self.num_stages, differentiable, weight, bias)
        if q is not k:
            z = em_responsibilities(q, previous, differentiable)
        if update:
            update_moving_average(self, bases)
        return EMOperator(z, weights, bases, k, self.normalize, differentiable, formed=weight is None)
