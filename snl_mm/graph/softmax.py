"""Softmax attention (the affinity of NL and NS) by fused attention, never storing ``N x N``."""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked_attention import chunked_softmax_attention
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


def _tracing() -> bool:
    """Whether a tracer (dynamo, ``torch.export``, ``torch.jit``) records this call."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, mask: Optional[Tensor] = None) -> Tensor:
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

    ``mask`` ``(B, N_k)`` (boolean, True where a key may be attended; None: every key) leaves keys out of every
    query's softmax; a query with no key left gets zeros.

    Keys narrower than the values (DANet's position attention: ``C / 8`` and ``C``) would be padded to ``c_v``
    channels, every logit computed ``c_v / c`` times over; on the CPU in eager mode they run over query chunks
    instead (:func:`~snl_mm.graph.chunked_attention.chunked_softmax_attention`: the unfused attention's products,
    a ``rows x N_k`` buffer at most). ``torch.compile`` and ``torch.export`` get the fused kernel, whose graph has no
    loop over the input's size; ``torch.jit`` tracing (the TorchScript ONNX exporter, which writes attention as two
    matrix products and a softmax either way, and the FLOP counter) the unfused products, without the padding.
    """
    b, n_q, c_qk = q.shape
    c_v = v.shape[-1]
    if c_qk < c_v and mask is None:
        if torch.jit.is_tracing():
            return torch.softmax(scale * torch.bmm(q, k.transpose(1, 2)), dim=-1) @ v
        if q.device.type == 'cpu' and not _tracing():
            return chunked_softmax_attention(q, k, v, scale)
    if c_qk < c_v:
        q, k = F.pad(q, (0, c_v - c_qk)), F.pad(k, (0, c_v - c_qk))
    elif c_v < c_qk:
        v = F.pad(v, (0, c_qk - c_v))
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    groups = _query_groups(b, n_q, q.device, needs_grad)
    q4 = q.contiguous().reshape(b, groups, n_q // groups, q.shape[-1])
    k4 = k.contiguous().unsqueeze(1).expand(b, groups, *k.shape[1:])
    v4 = v.contiguous().unsqueeze(1).expand(b, groups, *v.shape[1:])
    attn_mask = None if mask is None else mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=attn_mask, scale=scale)
    return out.reshape(b, n_q, -1)[..., :c_v]


@torch.fx.wrap
def softmax_matmul(q: Tensor, k: Tensor, z: Tensor, scale: Union[float, str], half_products: bool = True) -> Tensor:
    """``softmax_j(s q_i . k_j) z``: :func:`softmax_attention` in the compute dtype of ``z``
    (:mod:`snl_mm.graph.precision`), or in float32 (at least) with ``half_products=False``; returned in the compute
    dtype."""
    dtype = compute_dtype(z)
    products = dtype if half_products else float32(z).dtype
    with no_autocast(z.device.type):
        out = softmax_attention(q.to(products), k.to(products), z.to(products), resolve_scale(scale, q.shape[-1]))
        return out.to(dtype)


class SoftmaxOperator(GraphOperator):
    """``A = softmax_j(s q_i . k_j)`` applied by fused attention (:func:`softmax_attention`), never stored.

    Args:
        q (Tensor): queries ``(B, N_q, c)``.
        k (Tensor): keys ``(B, N_k, c)``.
        scale (float | str): ``s``, or ``'inv_sqrt'`` for ``1 / sqrt(c)``.
        half_products (bool): let the attention run in half precision under autocast; False keeps its inputs in
            float32 (logits sharpened by a temperature, whose rounding errors grow with them). Default: True.
    """

    def __init__(self, q: Tensor, k: Tensor, scale: Union[float, str], half_products: bool = True):
        self.q = q
        self.k = k
        self.scale = scale
        self.half_products = half_products

    def matmul(self, z: Tensor) -> Tensor:
        return softmax_matmul(self.q, self.k, z, self.scale, self.half_products)

    def dense(self) -> Tensor:
        q, k = float32(self.q), float32(self.k)
        with no_autocast(q.device.type):
            logits = resolve_scale(self.scale, q.shape[-1]) * torch.bmm(q, k.transpose(1, 2))
            return torch.softmax(logits, dim=-1)
