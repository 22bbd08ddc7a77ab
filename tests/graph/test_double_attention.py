"""The double attention graph: the factored gather-distribute product equals the dense row-stochastic
``A = softmax_desc(V)^T softmax_pos(B)``, computed in float32 under autocast."""
import pytest
import torch

from snl_mm.graph import double_attention


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_factored_product_equals_dense_affinity():
    b, n, cn, cm = 2, 11, 3, 4
    gather, distribute, f = _randn(b, n, cn, seed=1), _randn(b, n, cn, seed=2), _randn(b, n, cm, seed=3)
    op = double_attention(gather, distribute)
    # A_ij = sum_d softmax over descriptors of V at i, times softmax over positions of B at j
    sg = torch.exp(gather) / torch.exp(gather).sum(1, keepdim=True)
    sd = torch.exp(distribute) / torch.exp(distribute).sum(2, keepdim=True)
    a_ref = torch.einsum('bid,bjd->bij', sd, sg)
    a = op.dense()
    assert torch.allclose(a, a_ref, rtol=0, atol=1e-15)
    assert op.path == 'factored'
    assert torch.allclose(op.matmul(f), a_ref @ f, rtol=0, atol=1e-14)
    assert (a >= 0).all() and torch.allclose(a.sum(-1), torch.ones(b, n, dtype=a.dtype), atol=1e-14)
    assert torch.linalg.matrix_rank(a).max() <= cn
    # the gathered descriptors are convex combinations of the features
    descriptors = sg.transpose(1, 2) @ f  # (B, c_n, c_m)
    assert torch.allclose(sd @ descriptors, a_ref @ f, atol=1e-14)


def test_float32_under_autocast():
    g, v = _randn(2, 9, 3, dtype=torch.bfloat16), _randn(2, 9, 3, seed=1, dtype=torch.bfloat16)
    z = _randn(2, 9, 4, seed=2, dtype=torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        op = double_attention(g, v)
        out = op.matmul(z)
    assert op.p.dtype == op.q.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert torch.allclose(op.dense().sum(-1), torch.ones(2, 9), atol=1e-6)


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r'one shape \(B, N, c_n\)'):
        double_attention(_randn(1, 5, 2), _randn(1, 5, 3))
