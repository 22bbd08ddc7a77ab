"""Softmax attention (the affinity of NL and NS) by fused attention, never storing ``N x N``."""
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .operator import GraphOperator, resolve_scale
from .precision import compute_dtype, float32, no_autocast

#: most query groups :func:`softmax_attention` splits a batch element into (each holds a key gradient)
MAX_QUERY_GROUPS = 8


@torch.compiler.assume_constant_result
def cpu_threads() -> int:
    """The intra-op threads of this process; a constant to ``torch.compile`` (a compiled graph is specialised to
    the thread count it was compiled under, instead of breaking on the query)."""
    return torch.get_num_threads()


def _query_groups(batch: int, n_q: int, device: torch.device, needs_grad: bool) -> int:
    """Query groups per batch element that give every CPU thread a share of the attention backward."""
    if device.type != 'cpu' or not needs_grad:
        return 1
    want = -(-cpu_threads() // batch)
    if want < 2:
        return 1
    for groups in range(want, min(2 * want, MAX_QUERY_GROUPS) + 1):
        if n_q % groups == 0:
            return groups
    return 1


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``softmax(scale q k^T) v`` for ``q`` ``(B, N_q, c)``, ``k`` ``(B, N_k, c)``, ``v`` ``(B, N_k, c_v)``,
    by fused attention (``scaled_dot_product_attention``), never storing the ``N_q x N_k`` matrix.

    Runs in the dtype of its inputs; the fused kernels accumulate the logits and the softmax in float32 in every
    dtype. Three properties of the CPU flash kernel decide the layout (measured; see ``docs/performance.md``):

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


@torch.fx.wrap
def softmax_matmul(q: Tensor, k: Tensor, z: Tensor, scale: Union[float, str]) -> Tensor:
    """``softmax_j(s q_i . k_j) z``: :func:`softmax_attention` in the compute dtype of ``z``
    (:mod:`snl_mm.graph.precision`)."""
    dtype = compute_dtype(z)
    with no_autocast(z.device.type):
        return softmax_attention(q.to(dtype), k.to(dtype), z.to(dtype), resolve_scale(scale, q.shape[-1]))


class SoftmaxOperator(GraphOperator):
    """``A = softmax_j(s q_i . k_j)`` applied by fused attention (:func:`softmax_attention`), never stored.

    Args:
        q (Tensor): queries ``(B, N_q, c)``.
        k (Tensor): keys ``(B, N_k, c)``.
        scale (float | str): ``s``, or ``'inv_sqrt'`` for ``1 / sqrt(c)``.
    """

    def __init__(self, q: Tensor, k: Tensor, scale: Union[float, str]):
        self.q = q
        self.k = k
        self.scale = scale

    def matmul(self, z: Tensor) -> Tensor:
        return softmax_matmul(self.q, self.k, z, self.scale)

    def dense(self) -> Tensor:
        q, k = float32(self.q), float32(self.k)
        with no_autocast(q.device.type):
            logits = resolve_scale(self.scale, q.shape[-1]) * torch.bmm(q, k.transpose(1, 2))
            return torch.softmax(logits, dim=-1)
