"""Softmax attention over query chunks (keys narrower than the values): the same numbers and gradients as the dense
formula and as the fused kernel, chunk boundaries anywhere, never an ``N x N`` buffer, and the fused kernel where a
tracer records the call."""
import pytest
import torch

from snl_mm.analysis.benchmark.memory import profile_memory
from snl_mm.graph import chunked_attention
from snl_mm.graph.chunked_attention import chunk_rows, chunked_softmax_attention
from snl_mm.graph.softmax import softmax_attention
from tests.helpers import rel_err


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def dense(q, k, v, scale):
    logits = scale * q @ k.transpose(1, 2)
    weights = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    return (weights / weights.sum(dim=-1, keepdim=True)) @ v


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 rows: several chunks and a ragged last one at test sizes."""
    monkeypatch.setattr(chunked_attention, 'MIN_ROWS', 1)
    monkeypatch.setattr(chunked_attention, 'CHUNK_BYTES', 7 * 4 * 30)


def test_rows():
    assert chunk_rows(4096, 4096) == 1024 and chunk_rows(32768, 32768) == 128 and chunk_rows(10, 10) == 10
    assert chunk_rows(10 ** 6, 10 ** 6) == 64  # the fewest rows


def test_equals_the_formula_forward_and_backward(small_chunks):
    q, k, v = _randn(2, 23, 3, seed=1), _randn(2, 30, 3, seed=2), _randn(2, 30, 8, seed=3)
    assert chunk_rows(23, 30) == 7
    assert rel_err(chunked_softmax_attention(q, k, v, 0.6), dense(q, k, v, 0.6)) < 1e-12
    inputs = tuple(t[:, :9].clone().requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: chunked_softmax_attention(a, b, c, 0.6), inputs)


def test_equals_the_fused_kernel_the_tracers_get(small_chunks, monkeypatch):
    """Through :func:`softmax_attention` (keys narrower than values, CPU, eager): the chunked path, whose output and
    gradients are those of the fused kernel (which tracers get: forced here)."""
    q, k, v = (_randn(2, 30, c, seed=s, dtype=torch.float32).requires_grad_() for s, c in ((4, 2), (5, 2), (6, 16)))
    w = _randn(2, 30, 16, seed=7, dtype=torch.float32)

    def run():
        out = softmax_attention(q, k, v, 1.0)
        return (out, *torch.autograd.grad((out * w).sum(), (q, k, v)))

    calls = []
    original = chunked_attention.ChunkedSoftmaxAttention.apply
    monkeypatch.setattr(chunked_attention.ChunkedSoftmaxAttention, 'apply', lambda *a: calls.append(1) or original(*a))
    chunked = run()
    assert calls == [1]
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    fused = run()
    assert calls == [1]
    for a, b in zip(chunked, fused):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
def test_half_precision(dtype):
    """Logits, softmax and backward in float32; ``P v`` in the dtype of ``v``; gradients in the inputs' dtypes."""
    q, k, v = (_randn(1, 40, c, seed=s, dtype=torch.float32) for s, c in ((8, 4), (9, 4), (10, 12)))
    q = 6 * q  # logits of ~100: fine in float32, 0.5 apart in bfloat16
    expected = dense(q.double(), k.double(), v.double(), 1.0)
    qh, kh, vh = (t.to(dtype).requires_grad_() for t in (q, k, v))
    out = chunked_softmax_attention(qh, kh, vh, 1.0)
    assert out.dtype == dtype
    assert rel_err(out.double(), dense(qh.double(), kh.double(), vh.double(), 1.0)) < 1e-2
    assert rel_err(out.double(), expected) < 5e-2
    out.float().sum().backward()
    assert all(t.grad.dtype == dtype and torch.isfinite(t.grad).all() for t in (qh, kh, vh))


def test_samples_are_independent():
    q, k, v = _randn(3, 20, 2, seed=11), _randn(3, 20, 2, seed=12), _randn(3, 20, 6, seed=13)
    q[1, 4, 0] = float('nan')
    out = chunked_softmax_attention(q, k, v, 1.0)
    assert torch.isnan(out[1]).any() and torch.isfinite(out[0]).all() and torch.isfinite(out[2]).all()
    assert rel_err(out[2], dense(q[2:], k[2:], v[2:], 1.0)[0]) < 1e-12


def test_no_n_by_n_buffer_forward_and_backward():
    n = 8192
    q, k = _randn(1, n, 8, seed=14, dtype=torch.float32), _randn(1, n, 8, seed=15, dtype=torch.float32)
    v = _randn(1, n, 64, seed=16, dtype=torch.float32)
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def step():
        chunked_softmax_attention(q, k, v, 1.0).sum().backward()

    assert profile_memory(step).largest_allocation <= chunk_rows(n, n) * n * 4 < n * n * 4 / 8
