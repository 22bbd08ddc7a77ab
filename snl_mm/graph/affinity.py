"""Affinities: the graph ``A`` of a nonlocal block, as a kernel, a symmetrisation and a normalisation.

An :class:`Affinity` is configured once (``kernel``, ``symmetrize``, ``normalize``, ``scale``) and, given the
query and key embeddings of one input, returns a :class:`GraphOperator`: an object that multiplies a signal
by ``A`` without necessarily forming ``A``. Which order of products it uses is an implementation detail that
never changes the numbers beyond float rounding:

================  ===========  ==================  ====================================================
kernel            symmetrize   normalize           how ``A @ Z`` is computed
================  ===========  ==================  ====================================================
``exp_dot``       no           ``random_walk``     fused attention (``scaled_dot_product_attention``):
                                                   the softmax of NL / NS, never stores ``A``
``exp_dot``       any          other               dense (an exponential kernel has no low-rank form)
``dot``           any          ``none``/``size``   factored ``P (Q^T Z)`` or dense, by the cost model
``relu_dot``      any          any                 factored or dense, by the cost model (SNL)
``softmax``       any          any                 factored or dense, by the cost model (linear
                                                   attention: ``O(N c^2)``)
================  ===========  ==================  ====================================================

Three options apply to every kernel: ``center`` subtracts from the queries and the keys their means over positions
before the kernel (DNL's whitened pairwise term), ``temperature`` divides the logits (``s / tau``), and ``heads``
splits the channels of queries, keys and signals into groups with one graph each (:class:`MultiHeadOperator`).

Tensors are in token layout: ``q``, ``k`` of shape ``(B, N, c)``, signals ``z`` of shape ``(B, N, c_z)``.

Every affinity of the package, this kernel-configured one and the structured ones of the rest of the family
(whitened, rank one, pooled anchors, expectation-maximisation bases, ...), follows one protocol: built from a
config by :func:`build_affinity` (its ``type`` names a class of :data:`AFFINITIES`, ``'kernel'`` by default), it is
called as ``affinity(q, k, spatial)`` with the key map's spatial shape ``S`` (for affinities that pool it) and
returns a :class:`GraphOperator`; it has a ``notation`` (its column of Table 1). An affinity with state of its own
(a buffer, a parameter) is an ``nn.Module``, so that the block holding it carries that state in its state dict.
All normalisations run in float32 (also under autocast), the products in the compute dtype
(:mod:`snl_mm.graph.precision`), and a position of zero degree gets a zero row in ``A`` instead of a NaN. The
operators live in :mod:`~snl_mm.graph.operator`, :mod:`~snl_mm.graph.softmax` and :mod:`~snl_mm.graph.low_rank`.
"""
import math
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .cost import PATHS, Path
from .low_rank import DEGREE_NORMALIZATIONS, LowRankOperator
from .operator import (DenseOperator, GraphOperator, MultiHeadOperator, TemperedScale, inverse_power, resolve_scale,
                       split_heads)
from .precision import float32, no_autocast
from .softmax import SoftmaxOperator

# one call in a torch.fx graph (fx patches the name where it is looked up)
torch.fx.wrap('split_heads')

KERNELS = ('exp_dot', 'dot', 'relu_dot', 'softmax')
NORMALIZATIONS = ('none', 'size', 'random_walk', 'symmetric')

__all__ = ['KERNELS', 'NORMALIZATIONS', 'AFFINITIES', 'register_affinity', 'build_affinity', 'Affinity',
           'GraphOperator', 'DenseOperator', 'SoftmaxOperator', 'LowRankOperator', 'dense_exp_matrix',
           'inverse_power']

#: affinity classes by config ``type``: ``'kernel'`` (:class:`Affinity`) and the structured ones that register
#: themselves with :func:`register_affinity` when :mod:`snl_mm.graph` is imported
AFFINITIES: Dict[str, type] = {}


def register_affinity(name: str) -> Callable[[type], type]:
    """Class decorator: make an affinity class buildable as ``dict(type=name, ...)``."""

    def register(cls: type) -> type:
        if name in AFFINITIES and AFFINITIES[name] is not cls:
            raise KeyError(f'affinity type {name!r} is registered already ({AFFINITIES[name].__name__})')
        AFFINITIES[name] = cls
        return cls

    return register


def build_affinity(cfg: Dict[str, Any]):
    """The affinity a config describes: ``dict(type=..., **arguments)``, ``type`` one of :data:`AFFINITIES`
    (``'kernel'``, :class:`Affinity`, when left out). Raises ``KeyError`` naming the valid types, and the class's
    own ``TypeError`` / ``ValueError`` for its arguments."""
    if not isinstance(cfg, dict):
        raise TypeError(f'an affinity config must be a dict, got {cfg!r}')
    cfg = dict(cfg)
    kind = cfg.pop('type', 'kernel')
    if kind not in AFFINITIES:
        raise KeyError(f'affinity type must be one of {tuple(AFFINITIES)}, got {kind!r}')
    return AFFINITIES[kind](**cfg)


@torch.fx.wrap
def dense_exp_matrix(q: Tensor, k: Tensor, scale: Union[float, str], symmetrize: bool,
                     normalize: str) -> Tensor:
    """The exponential affinity ``exp(s q_i . k_j)``, symmetrised and normalised, formed in float32 (at least):
    its logits feed an exponential, and the degree normalisations run in the log domain, where exp of large
    logits cannot overflow and rows far below the sample's maximum cannot underflow to zero."""
    with no_autocast(q.device.type):
        q, k = float32(q), float32(k)
        logits = resolve_scale(scale, q.shape[-1]) * torch.bmm(q, k.transpose(1, 2))
        if normalize in ('none', 'size'):
            m = torch.exp(logits)
            if symmetrize:
                m = 0.5 * (m + m.transpose(1, 2))
            return m / m.shape[2] if normalize == 'size' else m
        log_m = logits
        if symmetrize:
            log_m = torch.logaddexp(logits, logits.transpose(1, 2)) - math.log(2.0)
        if normalize == 'random_walk':
            return torch.softmax(log_m, dim=-1)
        log_d = torch.logsumexp(log_m, dim=-1, keepdim=True)
        return torch.exp(log_m - 0.5 * log_d - 0.5 * log_d.transpose(1, 2))


@torch.fx.wrap
def center_positions(t: Tensor) -> Tensor:
    """``t - mean_N(t)`` for tokens ``(B, N, c)``: the mean over positions in float32 (at least), a reduction over
    ``N``; float32 (at least) out."""
    with no_autocast(t.device.type):
        t = float32(t)
        return t - t.mean(dim=1, keepdim=True)


@torch.fx.wrap
def softmax_factors(q: Tensor, k: Tensor):
    """The factors of the ``'softmax'`` kernel, float32 (at least): ``softmax`` over the channels of each query and
    over the positions of each key channel (efficient attention, Shen et al. 2021)."""
    with no_autocast(q.device.type):
        return torch.softmax(float32(q), dim=2), torch.softmax(float32(k), dim=1)


@register_affinity('kernel')
class Affinity:
    """A configurable affinity ``A(q, k)``: kernel, symmetrisation, normalisation.

    Args:
        kernel (str): ``'exp_dot'`` (``exp(s q.k)``, the embedded Gaussian), ``'dot'`` (``s q.k``),
            ``'relu_dot'`` (``s relu(q).relu(k)``, non-negative and of rank ``c``) or ``'softmax'``
            (``s softmax_c(q) . softmax_N(k)``: each query's channels and each key channel's positions through a
            softmax, non-negative, rank ``c``, rows summing to ``s``: efficient attention).
        symmetrize (bool): replace ``M`` by ``(M + M^T) / 2`` (needs as many queries as keys).
        normalize (str): ``'none'``; ``'size'`` (``M / N_k``, NL's dot product); ``'random_walk'``
            (``D^-1 M``: with ``exp_dot`` this is the softmax); ``'symmetric'`` (``D^-1/2 M D^-1/2``, SNL).
        scale (float | str): ``s``; ``'inv_sqrt'`` for ``1 / sqrt(c)``.
        path (str): ``'auto'`` (cost model), ``'dense'`` or ``'factored'``; forcing is for benchmarks and
            tests.
        center (bool): subtract from ``q`` and ``k`` their means over positions first (DNL's whitening).
            Default: False.
        temperature (float): ``tau > 0`` dividing the scale: ``s / tau``. Default: 1.
        heads (int): split the ``c`` channels of ``q``, ``k`` and of every signal into ``heads`` groups, each with
            its graph (``c`` divisible by ``heads``); ``dense()`` is then ``(B, heads, N_q, N_k)``. Default: 1.
    """

    def __init__(self,
                 kernel: str = 'relu_dot',
                 symmetrize: bool = False,
                 normalize: str = 'none',
                 scale: Union[float, str] = 1.0,
                 path: Path = 'auto',
                 center: bool = False,
                 temperature: float = 1.0,
                 heads: int = 1):
        if kernel not in KERNELS:
            raise ValueError(f'affinity kernel must be one of {KERNELS}, got {kernel!r}')
        if normalize not in NORMALIZATIONS:
            raise ValueError(f'affinity normalize must be one of {NORMALIZATIONS}, got {normalize!r}')
        if normalize == 'symmetric' and not symmetrize:
            raise ValueError("affinity normalize='symmetric' (D^-1/2 M D^-1/2) needs a symmetric kernel: "
                             "set symmetrize=True, or use normalize='random_walk', 'size' or 'none'")
        if kernel == 'dot' and normalize in ('random_walk', 'symmetric'):
            raise ValueError(
                f"affinity normalize={normalize!r} needs a non-negative kernel: kernel='relu_dot' or "
                "'exp_dot' (the signed 'dot' kernel takes normalize='none' or 'size')")
        if not (scale == 'inv_sqrt' or isinstance(scale, (int, float))):
            raise TypeError(f"affinity scale must be a number or 'inv_sqrt', got {scale!r}")
        if path not in PATHS:
            raise ValueError(f'affinity path must be one of {PATHS}, got {path!r}')
        if not isinstance(center, bool):
            raise TypeError(f'affinity center must be True or False, got {center!r}')
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f'affinity temperature must be a number > 0, got {temperature!r}')
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f'affinity heads must be a positive integer, got {heads!r}')
        self.kernel = kernel
        self.symmetrize = symmetrize
        self.normalize = normalize
        self.scale = scale
        self.path = path
        self.center = center
        self.temperature = temperature
        self.heads = heads

    @property
    def config(self) -> Dict[str, Any]:
        """The arguments this affinity was built with (``dict(type='kernel', **config)`` builds it again)."""
        return dict(kernel=self.kernel, symmetrize=self.symmetrize, normalize=self.normalize, scale=self.scale,
                    path=self.path, center=self.center, temperature=self.temperature, heads=self.heads)

    def __repr__(self) -> str:
        defaults = {'center': False, 'temperature': 1.0, 'heads': 1}
        options = ''.join(f', {k}={getattr(self, k)!r}' for k, v in defaults.items() if getattr(self, k) != v)
        return (f'Affinity(kernel={self.kernel!r}, symmetrize={self.symmetrize}, '
                f'normalize={self.normalize!r}, scale={self.scale!r}, path={self.path!r}{options})')

    @property
    def notation(self) -> str:
        """``A`` as the paper's Table 1 writes it, ``M`` the kernel (``M_hat = (M + M^T) / 2`` when symmetrised,
        ``M_w`` with ``center``: the kernel of whitened embeddings): ``'D_M^-1 M'`` (random walk),
        ``'D_M^-1/2 M_hat D_M^-1/2'`` (SNL), ``'M'``, ``'M / N'``; ``' (per head)'`` follows with ``heads > 1``."""
        kernel = 'M_w' if self.center else 'M'  # the whitened kernel: of centred embeddings
        m = f'{kernel}_hat' if self.symmetrize else kernel
        text = {'none': m, 'size': f'{m} / N', 'random_walk': f'D_{kernel}^-1 {m}',
                'symmetric': f'D_{kernel}^-1/2 {m} D_{kernel}^-1/2'}[self.normalize]
        if self.kernel == 'softmax':  # a product of normalised factors: say which
            text += f', {kernel} = softmax_c(Q) softmax_N(K)^T'
        return text if self.heads == 1 else f'{text} (per head)'

    @property
    def float32_embeddings(self) -> bool:
        """Whether the block should compute ``q`` and ``k`` outside autocast: a temperature below 1 multiplies the
        logits, and with them the rounding of half-precision embeddings, by ``1 / tau``."""
        return self.temperature < 1

    @property
    def streams(self) -> bool:
        """Whether ``A @ Z`` is computed without an ``N x N`` buffer at large ``N``."""
        return self.kernel != 'exp_dot' or (self.normalize == 'random_walk' and not self.symmetrize)

    def _check(self, q: Tensor, k: Tensor) -> None:
        if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
            raise ValueError(f'affinity expects q (B, N_q, c) and k (B, N_k, c), got {tuple(q.shape)} '
                             f'and {tuple(k.shape)}')
        if q.shape[2] % self.heads:
            raise ValueError(f'affinity heads={self.heads} must divide the channels of q and k, got '
                             f'{q.shape[2]}')
        if self.symmetrize and q.shape[1] != k.shape[1]:
            raise ValueError('a symmetrised affinity needs as many queries as keys, got '
                             f'{q.shape[1]} and {k.shape[1]}')

    def __call__(self, q: Tensor, k: Tensor, spatial: Optional[Sequence[int]] = None) -> GraphOperator:
        """The graph operator of queries ``q`` ``(B, N_q, c)`` and keys ``k`` ``(B, N_k, c)`` (shapes are
        checked except while ``torch.fx`` traces symbolically, when they are not known); ``spatial``, the key
        map's shape, is not needed by a kernel."""
        if not is_fx_symbolic_tracing():
            self._check(q, k)
        if self.center:
            q, k = center_positions(q), center_positions(k)
        if self.heads > 1:
            return MultiHeadOperator(self._operator(split_heads(q, self.heads), split_heads(k, self.heads)),
                                     self.heads)
        return self._operator(q, k)

    def _operator(self, q: Tensor, k: Tensor) -> GraphOperator:
        scale = self.scale if self.temperature == 1 else TemperedScale(self.scale, float(self.temperature))
        if self.kernel == 'exp_dot':
            if self.streams and self.path != 'dense':
                # a temperature below 1 multiplies the logits and the rounding errors of half-precision queries and
                # keys by 1 / tau (DNL's 0.05: bfloat16's 2^-8 becomes 5% of a logit): such attention runs in float32
                return SoftmaxOperator(q, k, scale, half_products=self.temperature >= 1)
            return DenseOperator(dense_exp_matrix(q, k, scale, self.symmetrize, self.normalize),
                                 bounded=self.normalize in DEGREE_NORMALIZATIONS)
        if self.kernel == 'relu_dot':
            q, k = F.relu(q), F.relu(k)
        elif self.kernel == 'softmax':
            q, k = softmax_factors(q, k)
        return LowRankOperator(q, k, scale, self.symmetrize, self.normalize, self.path)
