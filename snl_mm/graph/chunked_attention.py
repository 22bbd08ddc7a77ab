"""Softmax attention over query chunks, for keys narrower than the values (DANet's position attention).

``softmax(s q k^T) v`` with ``q``, ``k`` of ``c`` channels and ``v`` of ``c_v > c`` (PAM: ``c = C / 8``,
``c_v = C``). The CPU flash kernel of ``scaled_dot_product_attention`` streams only when the three have one width,
so :func:`~snl_mm.graph.softmax.softmax_attention` would pad ``q`` and ``k`` to ``c_v`` channels and compute each
logit ``c_v / c`` times over (8x for PAM): measured 1.3-1.5x the time of the unfused ``softmax(Q K^T) V`` in a
training step. Here the queries are taken ``rows`` at a time: each chunk's ``rows x N_k`` logits are formed by one
matrix product, normalised by one softmax and multiplied by ``v``, in buffers reused by every chunk, so the largest
buffer is ``rows x N_k`` (:data:`CHUNK_BYTES`) instead of ``N_q x N_k``, and the products are those of the unfused
attention.
The backward (:class:`ChunkedSoftmaxAttention`) recomputes each chunk's softmax from ``q`` and ``k`` (``2 N_q N_k c``
more multiply-adds, ``c / (3 c_v + 3 c)`` of the step) instead of storing it, as flash attention does.

Logits, softmax and the whole backward run in float32 (float64 stays float64); the forward product ``P v`` runs in
the dtype of ``v`` (``P``'s entries are in ``[0, 1]``, rows summing to 1: it cannot leave ``v``'s range). Each
sample is computed on its own, so one sample never changes another's output.
"""
from typing import Tuple

import torch
from torch import Tensor

from .precision import float32

#: the size of one ``rows x N_k`` float32 buffer of a chunk (16 MiB: 1024 rows at N_k = 4096, 128 at 32768;
#: measured on a 2-core CPU at (2, 512, 64, 64): with two threads 1024 rows are faster than 256, 128 and 4096,
#: with one thread 256 to 1024 rows alike)
CHUNK_BYTES = 16 << 20
#: the fewest query rows per chunk (matrix products of fewer rows run below the CPU's speed)
MIN_ROWS = 64


def chunk_rows(n_q: int, n_k: int) -> int:
    """Query rows per chunk: a ``rows x n_k`` float32 buffer of :data:`CHUNK_BYTES`, at least :data:`MIN_ROWS`."""
    return max(1, min(n_q, max(MIN_ROWS, CHUNK_BYTES // (4 * max(n_k, 1)))))


def _softmax_rows(q: Tensor, kt: Tensor, scale: float, logits: Tensor, p: Tensor) -> Tensor:
    """``softmax(s q k^T)`` of one chunk of queries ``q`` ``(rows, c)`` against keys ``kt`` ``(c, N_k)``, written into
    the first ``rows`` rows of the buffers ``logits`` and ``p``; returns that part of ``p``."""
    rows = q.shape[0]
    logits, p = logits[:rows], p[:rows]
    torch.mm(q, kt, out=logits)
    if scale != 1.0:
        logits.mul_(scale)
    return torch.ops.aten._softmax.out(logits, -1, False, out=p)


class ChunkedSoftmaxAttention(torch.autograd.Function):
    """``softmax(s q k^T) v`` chunk by chunk, forward and backward (:mod:`snl_mm.graph.chunked_attention`).

    Each pass allocates its ``rows x N_k`` buffers once and reuses them for every chunk (a fresh allocation per
    chunk leaves the allocator's heap fragmented: freed buffers the next chunk cannot reuse). The values, the
    output and their gradients are kept channel-major, ``(B, c_v, N)``, the layout of the maps they come from and
    go to: ``v`` is read and the output written without a transposing copy (the output is returned as the
    ``(B, N_q, c_v)`` view of a ``(B, c_v, N_q)`` buffer)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        b, n_q, _ = q.shape
        n_k = k.shape[1]
        rows = chunk_rows(n_q, n_k)
        q32, k32 = float32(q), float32(k)
        vt = v.transpose(1, 2).contiguous()  # (B, c_v, N_k): no copy for a view of a channel-major map
        out_t = v.new_empty(b, v.shape[-1], n_q)
        logits, p = (q32.new_empty(rows, n_k) for _ in range(2))
        for i in range(b):
            kt = k32[i].t()
            for start in range(0, n_q, rows):
                stop = min(start + rows, n_q)
                weights = _softmax_rows(q32[i, start:stop], kt, scale, logits, p)
                # (c_v, N_k) @ (N_k, rows), written into the columns of the chunk (a BLAS-compatible view)
                torch.mm(vt[i], weights.t().to(v.dtype), out=out_t[i, :, start:stop])
        ctx.save_for_backward(q, k, vt)
        ctx.scale = scale
        return out_t.transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Tensor, Tensor, Tensor, None]:
        q, k, vt = ctx.saved_tensors
        scale = ctx.scale
        b, n_q, _ = q.shape
        n_k = k.shape[1]
        rows = chunk_rows(n_q, n_k)
        q32, k32, vt32 = float32(q), float32(k), float32(vt)
        gt32 = float32(grad_out.transpose(1, 2)).contiguous()  # (B, c_v, N_q)
        dq = torch.empty_like(q32)
        dk = torch.zeros_like(k32)
        dvt = torch.zeros_like(vt32)
        logits, p, dp, ds = (q32.new_empty(rows, n_k) for _ in range(4))
        for i in range(b):
            kt = k32[i].t()
            for start in range(0, n_q, rows):
                stop = min(start + rows, n_q)
                weights = _softmax_rows(q32[i, start:stop], kt, scale, logits, p)
                g = gt32[i, :, start:stop]  # (c_v, rows)
                dvt[i].addmm_(g, weights)  # dv^T += g^T P
                # d logits = P o (dP - rowsum(dP o P)), dP = g v^T: the softmax backward, fused
                grad_p = torch.mm(g.t(), vt32[i], out=dp[:stop - start])
                grad_logits = torch.ops.aten._softmax_backward_data.out(grad_p, weights, -1, weights.dtype,
                                                                        grad_input=ds[:stop - start])
                if scale != 1.0:
                    grad_logits.mul_(scale)
                torch.mm(grad_logits, k32[i], out=dq[i, start:stop])
                dk[i].addmm_(grad_logits.t(), q32[i, start:stop])
        return dq.to(q.dtype), dk.to(k.dtype), dvt.to(vt.dtype).transpose(1, 2), None


def chunked_softmax_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``softmax(scale q k^T) v`` for ``q`` ``(B, N_q, c)``, ``k`` ``(B, N_k, c)``, ``v`` ``(B, N_k, c_v)`` over
    query chunks (never an ``N_q x N_k`` buffer, forward or backward); ``(B, N_q, c_v)`` in the dtype of ``v``, the
    transposed view of a contiguous ``(B, c_v, N_q)`` buffer."""
    return ChunkedSoftmaxAttention.apply(q.contiguous(), k.contiguous(), v, float(scale))
