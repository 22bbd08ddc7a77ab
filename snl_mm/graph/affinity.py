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
================  ===========  ==================  ====================================================

Tensors are in token layout: ``q``, ``k`` of shape ``(B, N, c)``, signals ``z`` of shape ``(B, N, c_z)``.
All normalisations run in float32 (also under autocast), and a position of zero degree gets a zero row in
``A`` instead of a NaN.
"""
import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .cost import PATHS, Path, choose_path

KERNELS = ('exp_dot', 'dot', 'relu_dot')
NORMALIZATIONS = ('none', 'size', 'random_walk', 'symmetric')


def _upcast(t: Tensor) -> Tensor:
    """At least float32: half-precision inputs (autocast) are normalised in float32, float64 stays."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _float32(*tensors: Tensor) -> tuple:
    return tuple(_upcast(t) for t in tensors)


def _no_autocast(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


def inverse_power(degree: Tensor, power: float) -> Tensor:
    """``degree ** -power`` with ``0`` where the degree is not positive (an isolated node, not a NaN)."""
    positive = degree > 0
    safe = torch.where(positive, degree, torch.ones_like(degree))
    return torch.where(positive, safe.pow(-power), torch.zeros_like(degree))


class GraphOperator:
    """``A`` for one input: multiplies signals by it, and can show it densely.

    Subclasses implement :meth:`matmul` (``(B, N_k, c) -> (B, N_q, c)``) and :meth:`dense`.
    """

    def matmul(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def dense(self) -> Tensor:
        raise NotImplementedError

    def __matmul__(self, z: Tensor) -> Tensor:
        return self.matmul(z)


class DenseOperator(GraphOperator):
    """An explicitly formed ``(B, N_q, N_k)`` float32 affinity."""

    def __init__(self, matrix: Tensor):
        self.matrix = matrix

    def matmul(self, z: Tensor) -> Tensor:
        with _no_autocast(z.device.type):
            return torch.bmm(self.matrix, _upcast(z)).to(z.dtype)

    def dense(self) -> Tensor:
        return self.matrix


#: most query groups :func:`softmax_attention` splits a batch element into (each holds a key gradient)
MAX_QUERY_GROUPS = 8


def _query_groups(batch: int, n_q: int, device: torch.device, needs_grad: bool) -> int:
    """Query groups per batch element that give every CPU thread a share of the attention backward."""
    if device.type != 'cpu' or not needs_grad:
        return 1
    want = -(-torch.get_num_threads() // batch)
    if want < 2:
        return 1
    for groups in range(want, min(2 * want, MAX_QUERY_GROUPS) + 1):
        if n_q % groups == 0:
            return groups
    return 1


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``softmax(scale q k^T) v`` for ``q`` ``(B, N_q, c)``, ``k`` ``(B, N_k, c)``, ``v`` ``(B, N_k, c_v)``,
    by fused attention (``scaled_dot_product_attention``), never storing the ``N_q x N_k`` matrix.

    Three properties of the CPU flash kernel decide the layout (measured; see ``docs/performance.md``):

    * it streams over keys only when its inputs are contiguous in the last dimension and ``q``, ``k``, ``v``
      have one width; otherwise SDPA silently forms ``N x N``. Narrower tensors are padded with zero
      channels, which change neither ``q . k`` (the scale is explicit) nor ``A v``;
    * its backward runs one thread per (batch, head) pair, so a single image (``B = 1``) would train on one
      core. The queries of each batch element are split into groups, one "head" each, attending to the
      same keys and values (broadcast, not copied): softmax rows are independent, so this is the same
      attention, and autograd sums the gradients of the shared keys and values.
    """
    b, n_q, c_qk = q.shape
    c_v = v.shape[-1]
    if c_qk < c_v:
        q, k = F.pad(q, (0, c_v - c_qk)), F.pad(k, (0, c_v - c_qk))
    elif c_v < c_qk:
        v = F.pad(v, (0, c_qk - c_v))
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    groups = _query_groups(b, n_q, q.device, needs_grad)
    q4 = q.contiguous().reshape(b, groups, n_q // groups, q.shape[-1])
    k4 = k.contiguous().unsqueeze(1).expand(b, groups, *k.shape[1:])
    v4 = v.contiguous().unsqueeze(1).expand(b, groups, *v.shape[1:])
    out = F.scaled_dot_product_attention(q4, k4, v4, scale=scale)
    return out.reshape(b, n_q, -1)[..., :c_v]


class SoftmaxOperator(GraphOperator):
    """``A = softmax_j(scale * q_i . k_j)`` applied by fused attention (:func:`softmax_attention`), never
    stored."""

    def __init__(self, q: Tensor, k: Tensor, scale: float):
        self.q = _upcast(q).contiguous()
        self.k = _upcast(k).contiguous()
        self.scale = scale

    def matmul(self, z: Tensor) -> Tensor:
        with _no_autocast(z.device.type):
            out = softmax_attention(self.q, self.k, _upcast(z), self.scale)
        return out.to(z.dtype)

    def dense(self) -> Tensor:
        with _no_autocast(self.q.device.type):
            return torch.softmax(self.scale * torch.bmm(self.q, self.k.transpose(1, 2)), dim=-1)


class LowRankOperator(GraphOperator):
    """``A = D_l^{-a} M D_r^{-b}`` for a rank-``c`` kernel ``M = s P Q^T`` (or its symmetrisation).

    The normalisation is folded into the factors once per operator, so that each product ``A z`` is
    matrix products only: with ``L``, ``R`` the row and column scalings and ``k`` the constant
    (``s``, ``s / 2`` when symmetrised, over ``N_k`` for ``'size'``),

    * factored order: ``A z = (L P) (k (R Q)^T z) [+ (L Q) (k (R P)^T z)]``, ``O(N c c_z)``; for the
      symmetric normalisation ``L = R`` and the two scaled factors are shared;
    * dense order: ``A = k L M R`` is formed once (``N_q x N_k``) and ``A z`` is one product.

    ``matmul`` returns ``(B, N_q, c_z)`` laid out channel-major (a transposed view), the layout of the 1x1
    convolutions around it.

    The degree normalisations (``'random_walk'``, ``'symmetric'``) do not change when ``M`` is multiplied by
    a positive constant, so ``k`` is left out of them.

    Args:
        p (Tensor): left factor ``(B, N_q, c)`` (already through the kernel's feature map, e.g. ReLU).
        q (Tensor): right factor ``(B, N_k, c)``.
        scale (float): ``s``.
        symmetrize (bool): use ``(M + M^T) / 2`` (needs ``N_q == N_k``).
        normalize (str): one of :data:`NORMALIZATIONS`.
        path (str): ``'auto'`` (cost model), ``'dense'`` or ``'factored'``.

    Attributes:
        path (str): the order of products taken, ``'dense'`` or ``'factored'``.
        left, right (Tensor | None): the row and column scalings ``D_l^{-a}``, ``D_r^{-b}`` as ``(B, N, 1)``.
    """

    def __init__(self, p: Tensor, q: Tensor, scale: float, symmetrize: bool, normalize: str,
                 path: Path = 'auto'):
        self.p, self.q = _float32(p, q)
        self.scale = scale
        self.symmetrize = symmetrize
        self.normalize = normalize
        self.requested_path = path
        b, n_q, c = self.p.shape
        n_k = self.q.shape[1]
        self._shape = (b, n_q, n_k, c)
        self.path = choose_path(n_q, n_k, c, c, symmetrize, batch=b, path=path)
        coef = scale * (0.5 if symmetrize else 1.0)
        if normalize == 'size':
            coef /= n_k
        elif normalize in ('random_walk', 'symmetric') and coef > 0:
            coef = 1.0  # invariant to a positive factor
        self._coef = coef
        self._matrix: Optional[Tensor] = None
        with _no_autocast(self.p.device.type):
            if self.path == 'dense':
                m = torch.bmm(self.p, self.q.transpose(1, 2))
                if symmetrize:
                    m = m + m.transpose(1, 2)
                if coef != 1.0:
                    m = coef * m
                degree = m.sum(dim=2, keepdim=True) if normalize in ('random_walk', 'symmetric') else None
                self.left, self.right = self._scalings(degree)
                if self.left is not None:
                    m = self.left * m
                if self.right is not None:
                    m = m * self.right.transpose(1, 2)
                self._matrix = m
            else:
                self.left, self.right = self._scalings(self._factored_degree())
                # outer factors L P, L Q and inner factors R Q, R P (shared when L is R)
                self._lp = self._scale_rows(self.left, self.p)
                self._rq = self._scale_rows(self.right, self.q)
                if symmetrize:
                    shared = self.right is self.left
                    self._lq = self._rq if shared else self._scale_rows(self.left, self.q)
                    self._rp = self._lp if shared else self._scale_rows(self.right, self.p)

    @staticmethod
    def _scale_rows(scaling: Optional[Tensor], factor: Tensor) -> Tensor:
        return factor if scaling is None else scaling * factor

    def _factored_degree(self) -> Optional[Tensor]:
        """Row sums of ``k M``, ``(B, N_q, 1)``, from the factors: ``k (P (Q^T 1) [+ Q (P^T 1)])``."""
        if self.normalize not in ('random_walk', 'symmetric'):
            return None
        degree = torch.bmm(self.p, self.q.sum(dim=1).unsqueeze(-1))
        if self.symmetrize:
            degree = torch.baddbmm(degree, self.q, self.p.sum(dim=1).unsqueeze(-1))
        return degree if self._coef == 1.0 else self._coef * degree

    def _scalings(self, degree: Optional[Tensor]):
        """Row and column scalings ``D_l^{-a}``, ``D_r^{-b}`` as ``(B, N, 1)`` tensors (or None)."""
        if degree is None:
            return None, None
        if self.normalize == 'random_walk':
            return inverse_power(degree, 1.0), None
        half = inverse_power(degree, 0.5)
        return half, half

    def _times_coef(self, t: Tensor) -> Tensor:
        return t if self._coef == 1.0 else self._coef * t

    def matmul(self, z: Tensor) -> Tensor:
        # Computed as (A z)^T = z^T A^T: signals come from 1x1 convolutions (channel-major memory, z a
        # transposed view), and a channel-major result feeds the next convolution without a copy.
        dtype = z.dtype
        with _no_autocast(z.device.type):
            zt = _upcast(z).transpose(1, 2)  # (B, c_z, N_k)
            if self._matrix is not None:
                out = torch.bmm(zt, self._matrix.transpose(1, 2))
            else:
                # the constant goes on the small (c_z, c) products
                inner = self._times_coef(torch.bmm(zt, self._rq))
                out = torch.bmm(inner, self._lp.transpose(1, 2))
                if self.symmetrize:
                    inner = self._times_coef(torch.bmm(zt, self._rp))
                    out = torch.baddbmm(out, inner, self._lq.transpose(1, 2))
        return out.transpose(1, 2).to(dtype)

    def dense(self) -> Tensor:
        if self._matrix is not None:
            return self._matrix
        with _no_autocast(self.p.device.type):
            m = torch.bmm(self._lp, self._rq.transpose(1, 2))
            if self.symmetrize:
                m = torch.baddbmm(m, self._lq, self._rp.transpose(1, 2))
        return self._times_coef(m)


class Affinity:
    """A configurable affinity ``A(q, k)``: kernel, symmetrisation, normalisation.

    Args:
        kernel (str): ``'exp_dot'`` (``exp(s q.k)``, the embedded Gaussian), ``'dot'`` (``s q.k``) or
            ``'relu_dot'`` (``s relu(q).relu(k)``, non-negative and of rank ``c``).
        symmetrize (bool): replace ``M`` by ``(M + M^T) / 2`` (needs as many queries as keys).
        normalize (str): ``'none'``; ``'size'`` (``M / N_k``, NL's dot product); ``'random_walk'``
            (``D^-1 M``: with ``exp_dot`` this is the softmax); ``'symmetric'`` (``D^-1/2 M D^-1/2``, SNL).
        scale (float | str): ``s``; ``'inv_sqrt'`` for ``1 / sqrt(c)``.
        path (str): ``'auto'`` (cost model), ``'dense'`` or ``'factored'``; forcing is for benchmarks and
            tests.
    """

    def __init__(self,
                 kernel: str = 'relu_dot',
                 symmetrize: bool = False,
                 normalize: str = 'none',
                 scale: Union[float, str] = 1.0,
                 path: Path = 'auto'):
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
        self.kernel = kernel
        self.symmetrize = symmetrize
        self.normalize = normalize
        self.scale = scale
        self.path = path

    def __repr__(self) -> str:
        return (f'Affinity(kernel={self.kernel!r}, symmetrize={self.symmetrize}, '
                f'normalize={self.normalize!r}, scale={self.scale!r}, path={self.path!r})')

    @property
    def notation(self) -> str:
        """``A`` as the paper's Table 1 writes it, ``M`` the kernel (``M_hat = (M + M^T) / 2`` when symmetrised):
        ``'D_M^-1 M'`` (random walk), ``'D_M^-1/2 M_hat D_M^-1/2'`` (SNL), ``'M'``, ``'M / N'``."""
        m = 'M_hat' if self.symmetrize else 'M'
        return {'none': m, 'size': f'{m} / N', 'random_walk': f'D_M^-1 {m}',
                'symmetric': f'D_M^-1/2 {m} D_M^-1/2'}[self.normalize]

    @property
    def streams(self) -> bool:
        """Whether ``A @ Z`` is computed without an ``N x N`` buffer at large ``N``."""
        return self.kernel != 'exp_dot' or (self.normalize == 'random_walk' and not self.symmetrize)

    def _scale(self, channels: int) -> float:
        return 1.0 / math.sqrt(channels) if self.scale == 'inv_sqrt' else float(self.scale)

    def __call__(self, q: Tensor, k: Tensor) -> GraphOperator:
        """The graph operator of queries ``q`` ``(B, N_q, c)`` and keys ``k`` ``(B, N_k, c)``."""
        if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
            raise ValueError(f'affinity expects q (B, N_q, c) and k (B, N_k, c), got {tuple(q.shape)} '
                             f'and {tuple(k.shape)}')
        if self.symmetrize and q.shape[1] != k.shape[1]:
            raise ValueError('a symmetrised affinity needs as many queries as keys, got '
                             f'{q.shape[1]} and {k.shape[1]}')
        scale = self._scale(q.shape[-1])
        if self.kernel == 'exp_dot':
            if self.streams and self.path != 'dense':
                return SoftmaxOperator(q, k, scale)
            return DenseOperator(self._dense_exp(q, k, scale))
        if self.kernel == 'relu_dot':
            q, k = F.relu(q), F.relu(k)
        return LowRankOperator(q, k, scale, self.symmetrize, self.normalize, self.path)

    def _dense_exp(self, q: Tensor, k: Tensor, scale: float) -> Tensor:
        with _no_autocast(q.device.type):
            logits = scale * torch.bmm(_upcast(q), _upcast(k).transpose(1, 2))
            if self.normalize in ('none', 'size'):
                m = torch.exp(logits)
                if self.symmetrize:
                    m = 0.5 * (m + m.transpose(1, 2))
                return m / m.shape[2] if self.normalize == 'size' else m
            # the degree normalisations are computed in the log domain: exp of large logits overflows
            # and rows far below the sample's maximum would underflow to zero
            log_m = logits
            if self.symmetrize:
                log_m = torch.logaddexp(logits, logits.transpose(1, 2)) - math.log(2.0)
            if self.normalize == 'random_walk':
                return torch.softmax(log_m, dim=-1)
            log_d = torch.logsumexp(log_m, dim=-1, keepdim=True)
            return torch.exp(log_m - 0.5 * log_d - 0.5 * log_d.transpose(1, 2))
