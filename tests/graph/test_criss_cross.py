"""The criss-cross graph operator: the line-by-line product equals the masked dense softmax, each position
is counted once, the time line is included in 3D, float32 under autocast, gradients; the out-of-place form the
tracers see computes the same."""
import itertools

import pytest
import torch

from snl_mm.graph import CrissCrossOperator, criss_cross_attention, criss_cross_mask

GRIDS = [(4, 5), (1, 6), (5, 1), (1, 1), (3, 4, 5), (1, 3, 4), (3, 1, 1), (2, 1, 3)]


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def loop_mask(spatial) -> torch.Tensor:
    coords = list(itertools.product(*[range(s) for s in spatial]))
    return torch.tensor([[sum(a != b for a, b in zip(ci, cj)) <= 1 for cj in coords] for ci in coords])


def masked_softmax_reference(q, k, spatial):
    """Softmax of ``q_i . k_j`` over the positions ``j`` on the cross of ``i`` (each once), 0 elsewhere."""
    logits = q @ k.transpose(1, 2)
    out = torch.zeros_like(logits)
    mask = loop_mask(spatial)
    for i in range(logits.shape[1]):
        cross = mask[i].nonzero().flatten()
        out[:, i, cross] = torch.softmax(logits[:, i, cross], dim=-1)
    return out


@pytest.mark.parametrize('spatial', GRIDS, ids=str)
def test_mask(spatial):
    mask = criss_cross_mask(spatial)
    assert torch.equal(mask, loop_mask(spatial))
    # row, column (and time line) through each position, the centre once
    assert (mask.sum(1) == sum(spatial) - len(spatial) + 1).all()
    assert torch.equal(mask, mask.T) and mask.diagonal().all()


@pytest.mark.parametrize('spatial', GRIDS, ids=str)
def test_line_product_equals_masked_dense_softmax(spatial):
    n = torch.Size(spatial).numel()
    q, k, z = _randn(2, n, 3, seed=1), _randn(2, n, 3, seed=2), _randn(2, n, 5, seed=3)
    op = CrissCrossOperator(q, k, spatial)
    a_ref = masked_softmax_reference(q, k, spatial)
    assert torch.allclose(op.dense(), a_ref, rtol=0, atol=1e-14)
    # the forward path's A, read off by multiplying the identity: the centre is not counted twice
    eye = torch.eye(n, dtype=q.dtype).expand(2, n, n)
    assert torch.allclose(op.matmul(eye), a_ref, rtol=0, atol=1e-14)
    assert torch.allclose(op.matmul(z), a_ref @ z, rtol=0, atol=1e-13)


def test_centre_weight_only_on_the_last_axis():
    spatial = (3, 4, 5)
    n = 60
    op = CrissCrossOperator(_randn(1, n, 2, seed=1), _randn(1, n, 2, seed=2), spatial)
    weights = op.line_weights()
    assert [w.shape for w in weights] == [(1, *spatial, s) for s in spatial]
    t, h, w = torch.meshgrid(*[torch.arange(s) for s in spatial], indexing='ij')
    assert (weights[0][0, t, h, w, t] == 0).all()  # centre masked on the time line
    assert (weights[1][0, t, h, w, h] == 0).all()  # and on the column
    assert (weights[2][0, t, h, w, w] > 0).all()  # kept on the row
    total = sum(x.sum(-1) for x in weights)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-14)


def test_3d_includes_the_time_line():
    spatial = (4, 2, 3)
    a = CrissCrossOperator(_randn(1, 24, 2, seed=1), _randn(1, 24, 2, seed=2), spatial).dense()[0]
    grid = a.reshape(*spatial, *spatial)
    # position (1, 0, 2) takes from every frame at (0, 2), and from no off-line position of another frame
    assert (grid[1, 0, 2, :, 0, 2] > 0).all()
    assert grid[1, 0, 2, 0, 1, 2] == 0 and grid[1, 0, 2, 3, 0, 0] == 0 and grid[1, 0, 2, 2, 1, 1] == 0


def test_float32_under_autocast_and_signal_dtype_kept():
    n = 20
    q, k = _randn(2, n, 4, dtype=torch.bfloat16), _randn(2, n, 4, seed=1, dtype=torch.bfloat16)
    z = _randn(2, n, 3, seed=2, dtype=torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        op = CrissCrossOperator(q, k, (4, 5))
        out = op.matmul(z)
        a = op.dense()
    assert all(w.dtype == torch.float32 for w in op.line_weights())
    assert a.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert torch.allclose(a.sum(-1), torch.ones(2, n), atol=1e-6)


def test_gradcheck():
    spatial = (2, 2, 3)
    q, k, z = (_randn(1, 12, c, seed=s).requires_grad_() for s, c in ((1, 2), (2, 2), (3, 2)))
    assert torch.autograd.gradcheck(lambda q, k, z: CrissCrossOperator(q, k, spatial).matmul(z), (q, k, z))


def _packed(spatial, seed):
    """Packed ``qkv`` (``c = 2``, ``c_v = 3``), a scale and a residual, and the expected
    ``residual + scale * (A v)`` from the masked dense softmax."""
    n, c, c_v = torch.Size(spatial).numel(), 2, 3
    qkv = _randn(2, *spatial, 2 * c + c_v, seed=seed).requires_grad_()
    scale = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    residual = _randn(2, *spatial, c_v, seed=seed + 1).requires_grad_()
    q, k, v = (t.reshape(2, n, -1) for t in qkv.split([c, c, c_v], dim=-1))
    attended = (masked_softmax_reference(q, k, spatial) @ v).reshape(residual.shape)
    return qkv, scale, residual, attended


@pytest.mark.parametrize('spatial', [(3, 4), (2, 3, 4), (1, 5)], ids=str)
def test_fused_residual_and_scale(spatial):
    """``residual + scale * (A v)`` from packed ``qkv``: values and gradients (``qkv``, the scale, the
    residual) against the masked dense softmax."""
    qkv, scale, residual, attended = _packed(spatial, seed=4)
    assert torch.allclose(criss_cross_attention(qkv, 2, scale, residual), residual + scale * attended, rtol=0,
                          atol=1e-13)
    assert torch.allclose(criss_cross_attention(qkv, 2), attended, atol=1e-13)
    assert torch.autograd.gradcheck(lambda *t: criss_cross_attention(t[0], 2, *t[1:]), (qkv, scale, residual))
    assert torch.autograd.gradcheck(lambda t: criss_cross_attention(t, 2, scale.detach()), (qkv, ))


@pytest.mark.parametrize('spatial', GRIDS, ids=str)
def test_traced_form_against_the_masked_softmax(spatial):
    """The out-of-place form that tracers see (``torch.compile``, ``torch.export``, ``torch.jit.trace``): values
    against the masked dense softmax and gradients by gradcheck (autograd's own backward)."""
    from snl_mm.graph.criss_cross import _traced_attention
    qkv, scale, residual, attended = _packed(spatial, seed=6)
    assert torch.allclose(_traced_attention(qkv, 2, scale, residual), residual + scale * attended, rtol=0,
                          atol=1e-13)
    assert torch.allclose(_traced_attention(qkv, 2, None, None), attended, rtol=0, atol=1e-13)
    if qkv[0, ..., 0].numel() <= 12:  # gradcheck differentiates numerically once per input entry
        one = [t[:1].detach().requires_grad_() for t in (qkv, residual)]
        assert torch.autograd.gradcheck(lambda *t: _traced_attention(t[0], 2, *t[1:]), (one[0], scale, one[1]))


def test_tracers_take_the_traced_form():
    """Under ``torch.jit.trace`` the fused call records the out-of-place form (no written-out backward, no
    ``out=`` products) and gives the same numbers."""
    qkv, residual = _randn(1, 3, 4, 7, seed=8, dtype=torch.float32), _randn(1, 3, 4, 3, seed=9, dtype=torch.float32)
    traced = torch.jit.trace(lambda t, r: criss_cross_attention(t, 2, None, r), (qkv, residual))
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert 'prim::PythonOp' not in kinds and 'aten::baddbmm_' not in kinds
    assert torch.allclose(traced(qkv, residual), criss_cross_attention(qkv, 2, None, residual), atol=1e-6)


def test_fused_bad_arguments():
    qkv = _randn(1, 3, 4, 5)
    with pytest.raises(ValueError, match=r'key_channels=3 leaves no value channels'):
        criss_cross_attention(qkv, 3)
    with pytest.raises(ValueError, match=r'residual of shape \(1, 3, 4, 2\) does not match'):
        criss_cross_attention(qkv, 1, residual=_randn(1, 3, 4, 2))
    with pytest.raises(ValueError, match=r'grid of rank \(2, 3\)'):
        criss_cross_attention(_randn(1, 3, 5), 1)


def test_bad_grids():
    with pytest.raises(ValueError, match=r'grid of rank \(2, 3\)'):
        CrissCrossOperator(_randn(1, 5, 2), _randn(1, 5, 2), (5,))
    with pytest.raises(ValueError, match=r'grid of rank \(2, 3\)'):
        criss_cross_mask((2, 2, 2, 2))
    with pytest.raises(ValueError, match=r'expects q and k of shape \(B, N=6, c\)'):
        CrissCrossOperator(_randn(1, 5, 2), _randn(1, 5, 2), (2, 3))
