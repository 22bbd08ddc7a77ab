"""The kernel affinity's options beyond kernel and normalisation: the ``'softmax'`` factor kernel (efficient
attention), ``center`` (DNL's whitening), ``temperature`` and ``heads``, against their formulas in float64, with the
orders of products, the operators they build and their errors."""
import pytest
import torch

from snl_mm.graph import Affinity, LowRankOperator, MultiHeadOperator, SoftmaxOperator
from snl_mm.graph.operator import TemperedScale, merge_heads, resolve_scale, split_heads
from tests.blocks.reference import chebyshev_matrices, softmax_rows
from tests.helpers import rel_err


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _efficient_attention(q, k):
    """Shen et al.'s affinity of one head: ``softmax`` over each query's channels times ``softmax`` over the
    positions of each key channel, transposed: ``(B, N_q, N_k)``."""
    rho_q = torch.exp(q) / torch.exp(q).sum(-1, keepdim=True)
    rho_k = torch.exp(k) / torch.exp(k).sum(1, keepdim=True)
    return rho_q @ rho_k.transpose(1, 2)


@pytest.mark.parametrize('path', ['auto', 'dense', 'factored'])
def test_softmax_kernel_is_row_stochastic_of_rank_c(path):
    q, k, z = _rand(2, 30, 3, seed=1), _rand(2, 30, 3, seed=2), _rand(2, 30, 4, seed=3)
    op = Affinity('softmax', path=path)(q, k)
    assert isinstance(op, LowRankOperator)
    a = _efficient_attention(q, k)
    assert rel_err(op.dense(), a) < 1e-13
    assert rel_err(op.matmul(z), a @ z) < 1e-13
    assert torch.allclose(a.sum(-1), torch.ones(2, 30, dtype=torch.float64))
    assert torch.linalg.matrix_rank(op.dense()).max() <= 3
    if path == 'auto':
        assert op.path == 'factored'  # N = 30 > c = 3: O(N c^2)


def test_softmax_kernel_with_snl_normalisation_and_chebyshev_terms():
    """``symmetrize=True, normalize='symmetric'``: SNL's ``D^-1/2 M_hat D^-1/2`` of the efficient-attention graph,
    its degrees from the factors; every Chebyshev term equal to the dense one."""
    q, k, z = _rand(2, 12, 4, seed=4), _rand(2, 12, 4, seed=5), _rand(2, 12, 3, seed=6)
    m = _efficient_attention(q, k)
    m = (m + m.transpose(1, 2)) / 2
    d = m.sum(-1)
    a = m / torch.sqrt(d[:, :, None] * d[:, None, :])
    for path in ('dense', 'factored'):
        op = Affinity('softmax', True, 'symmetric', path=path)(q, k)
        assert op.path == path
        assert rel_err(op.dense(), a) < 1e-13
        got = [op.matmul(z)]
        got.append(2 * op.matmul(got[0]) - z)
        for g, t in zip(got, chebyshev_matrices(a, 3)[1:]):
            assert rel_err(g, t @ z) < 1e-12


@pytest.mark.parametrize('kernel,normalize', [('exp_dot', 'random_walk'), ('dot', 'size'), ('relu_dot', 'none')])
def test_center_and_temperature(kernel, normalize):
    q, k, z = _rand(2, 9, 4, seed=7), _rand(2, 9, 4, seed=8), _rand(2, 9, 3, seed=9)
    qc, kc = q - q.mean(1, keepdim=True), k - k.mean(1, keepdim=True)
    logits = 4 ** -0.5 / 0.1 * qc @ kc.transpose(1, 2)
    expected = {'exp_dot': softmax_rows(logits), 'dot': logits / 9,
                'relu_dot': 4 ** -0.5 / 0.1 * qc.clamp(min=0) @ kc.clamp(min=0).transpose(1, 2)}[kernel]
    affinity = Affinity(kernel, normalize=normalize, scale='inv_sqrt', center=True, temperature=0.1)
    op = affinity(q, k)
    assert isinstance(op, SoftmaxOperator if kernel == 'exp_dot' else LowRankOperator)
    assert rel_err(op.dense(), expected) < 1e-13
    assert rel_err(op.matmul(z), expected @ z) < 1e-13
    assert 'M_w' in affinity.notation and 'center=True, temperature=0.1' in repr(affinity)
    assert Affinity(**affinity.config).config == affinity.config


def test_tempered_scale():
    assert resolve_scale(TemperedScale('inv_sqrt', 0.05), 16) == pytest.approx(0.25 / 0.05)
    assert resolve_scale(TemperedScale(2.0, 4.0), 7) == 0.5


@pytest.mark.parametrize('kernel,normalize', [('softmax', 'none'), ('exp_dot', 'random_walk'),
                                              ('relu_dot', 'symmetric')])
def test_heads_are_block_diagonal(kernel, normalize):
    """``heads=h``: channel group ``i`` of queries, keys and signals forms head ``i``'s graph and is multiplied by
    it alone."""
    heads, c = 3, 6
    q, k, z = _rand(2, 8, c, seed=10), _rand(2, 8, c, seed=11), _rand(2, 8, 9, seed=12)
    affinity = Affinity(kernel, symmetrize=normalize == 'symmetric', normalize=normalize, heads=heads)
    op = affinity(q, k)
    assert isinstance(op, MultiHeadOperator) and affinity.notation.endswith('(per head)')
    dense = op.dense()
    assert dense.shape == (2, heads, 8, 8)
    out = op.matmul(z)
    for i in range(heads):
        one = Affinity(kernel, symmetrize=normalize == 'symmetric', normalize=normalize)(
            q[..., 2 * i:2 * i + 2], k[..., 2 * i:2 * i + 2])
        assert rel_err(dense[:, i], one.dense()) < 1e-13
        assert rel_err(out[..., 3 * i:3 * i + 3], one.dense() @ z[..., 3 * i:3 * i + 3]) < 1e-13


def test_split_and_merge_heads_are_inverse():
    t = _rand(2, 5, 6)
    assert torch.equal(split_heads(t, 3)[1], t[0, :, 2:4])  # sample 0, head 1
    assert torch.equal(merge_heads(split_heads(t, 3), 3), t)


def test_bad_options():
    with pytest.raises(ValueError, match='temperature must be a number > 0, got 0'):
        Affinity(temperature=0)
    with pytest.raises(ValueError, match='heads must be a positive integer, got 0'):
        Affinity(heads=0)
    with pytest.raises(TypeError, match='center must be True or False'):
        Affinity(center=1)
    with pytest.raises(ValueError, match='heads=4 must divide the channels of q and k, got 6'):
        Affinity('softmax', heads=4)(_rand(1, 3, 6), _rand(1, 3, 6))
