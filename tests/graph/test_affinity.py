"""Affinities: every kernel x symmetrisation x normalisation against its formula, every order of products
against the dense matrix, zero degrees, overflow, autocast and argument validation."""
import itertools

import pytest
import torch

from snl_mm.graph import (KERNELS, NORMALIZATIONS, Affinity, DenseOperator, LowRankOperator,
                          SoftmaxOperator)
from snl_mm.graph.affinity import inverse_power

VALID = [(k, s, n) for k, s, n in itertools.product(KERNELS, (False, True), NORMALIZATIONS)
         if not (k == 'dot' and n in ('random_walk', 'symmetric')) and not (n == 'symmetric' and not s)]


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _formula(kernel: str, symmetrize: bool, normalize: str, q, k, scale: float):
    """The affinity written out: kernel, optional (M + M^T) / 2, then the normalisation."""
    if kernel == 'relu_dot':
        q, k = q.clamp(min=0), k.clamp(min=0)
    if kernel == 'softmax':  # each query over its channels, each key channel over the positions
        q, k = torch.exp(q) / torch.exp(q).sum(2, keepdim=True), torch.exp(k) / torch.exp(k).sum(1, keepdim=True)
    m = scale * torch.einsum('bic,bjc->bij', q, k)
    if kernel == 'exp_dot':
        m = m.exp()
    if symmetrize:
        m = (m + m.transpose(1, 2)) / 2
    if normalize == 'size':
        return m / k.shape[1]
    d = m.sum(-1)
    inv = torch.where(d > 0, d, torch.ones_like(d))
    if normalize == 'random_walk':
        return torch.where(d > 0, 1 / inv, 0)[:, :, None] * m
    if normalize == 'symmetric':
        r = torch.where(d > 0, inv ** -0.5, 0)
        return r[:, :, None] * m * r[:, None, :]
    return m


@pytest.mark.parametrize('scale', [0.7, 'inv_sqrt'])
@pytest.mark.parametrize('kernel,symmetrize,normalize', VALID)
def test_dense_matches_formula(kernel, symmetrize, normalize, scale):
    q, k = _rand(2, 7, 3, seed=1), _rand(2, 7, 3, seed=2)
    s = 3 ** -0.5 if scale == 'inv_sqrt' else scale
    a = Affinity(kernel, symmetrize, normalize, scale=scale)(q, k).dense()
    err = ((a - _formula(kernel, symmetrize, normalize, q, k, s)).norm() / a.norm()).item()
    assert err < 1e-13, err
    if normalize == 'random_walk' and kernel == 'exp_dot':
        assert torch.allclose(a.sum(-1), torch.ones(2, 7, dtype=a.dtype))


@pytest.mark.parametrize('path', ['auto', 'dense', 'factored'])
@pytest.mark.parametrize('kernel,symmetrize,normalize', VALID)
def test_matmul_equals_dense_product(kernel, symmetrize, normalize, path):
    square = symmetrize or normalize == 'symmetric'
    n_k = 7 if square else 5  # rectangular affinities where they are defined (NL's sub_sample)
    q, k, z = _rand(2, 7, 3, seed=3), _rand(2, n_k, 3, seed=4), _rand(2, n_k, 4, seed=5)
    op = Affinity(kernel, symmetrize, normalize, scale=0.5, path=path)(q, k)
    out = op.matmul(z)
    assert out.shape == (2, 7, 4)
    ref = op.dense() @ z
    assert ((out - ref).norm() / ref.norm()).item() < 1e-12
    assert torch.equal(op @ z, out)


@pytest.mark.parametrize('n', [4, 40, 400])
def test_low_rank_paths_agree_and_follow_the_cost_model(n):
    q, k, z = _rand(1, n, 6, seed=6), _rand(1, n, 6, seed=7), _rand(1, n, 6, seed=8)
    outs = {}
    for path in ('auto', 'dense', 'factored'):
        op = Affinity('relu_dot', True, 'symmetric', path=path)(q, k)
        assert op.path == (path if path != 'auto' else op.path)
        outs[path] = op.matmul(z)
    assert ((outs['dense'] - outs['factored']).norm() / outs['dense'].norm()).item() < 1e-12
    auto = Affinity('relu_dot', True, 'symmetric')(q, k).path
    assert auto == ('dense' if n == 4 else 'factored')


def test_operator_kinds():
    q, k = _rand(1, 6, 3), _rand(1, 6, 3, seed=1)
    assert isinstance(Affinity('exp_dot', False, 'random_walk')(q, k), SoftmaxOperator)
    assert isinstance(Affinity('exp_dot', False, 'random_walk', path='dense')(q, k), DenseOperator)
    assert isinstance(Affinity('exp_dot', True, 'random_walk')(q, k), DenseOperator)
    assert isinstance(Affinity('exp_dot', True, 'symmetric')(q, k), DenseOperator)
    assert isinstance(Affinity('relu_dot', True, 'symmetric')(q, k), LowRankOperator)
    assert isinstance(Affinity('dot', False, 'size')(q, k), LowRankOperator)
    assert Affinity('exp_dot', False, 'random_walk').streams
    assert not Affinity('exp_dot', True, 'random_walk').streams
    assert Affinity('relu_dot', True, 'symmetric').streams


@pytest.mark.parametrize('path', ['dense', 'factored'])
@pytest.mark.parametrize('normalize', ['random_walk', 'symmetric'])
def test_zero_degree_rows_are_zero_not_nan(normalize, path):
    q, k = _rand(1, 6, 3, seed=9), _rand(1, 6, 3, seed=10)
    q[0, 2] = -q[0, 2].abs()  # relu(q_2) = 0: row 2 of M is zero
    k[0, 2] = -k[0, 2].abs()  # and column 2 (symmetrised: its degree is zero)
    for symmetrize in (False, True) if normalize == 'random_walk' else (True,):
        op = Affinity('relu_dot', symmetrize, normalize, path=path)(q, k)
        a = op.dense()
        assert not a.isnan().any()
        assert (a[0, 2] == 0).all()
        out = op.matmul(_rand(1, 6, 2, seed=11))
        assert torch.isfinite(out).all() and (out[0, 2] == 0).all()


def test_inverse_power():
    d = torch.tensor([0.0, 4.0, -1.0, 0.25])
    assert torch.equal(inverse_power(d, 0.5), torch.tensor([0.0, 0.5, 0.0, 2.0]))
    assert torch.equal(inverse_power(d, 1.0), torch.tensor([0.0, 0.25, 0.0, 4.0]))


def _stable_exp_affinity(symmetrize: bool, normalize: str, q, k):
    """The normalised exponential affinity in the log domain (float64): never overflows or underflows."""
    log_m = torch.einsum('bic,bjc->bij', q.double(), k.double())
    if symmetrize:
        log_m = torch.logaddexp(log_m, log_m.transpose(1, 2)) - torch.log(torch.tensor(2.0, dtype=log_m.dtype))
    if normalize == 'random_walk':
        return torch.softmax(log_m, -1)
    log_d = torch.logsumexp(log_m, -1, keepdim=True)
    return torch.exp(log_m - log_d / 2 - log_d.transpose(1, 2) / 2)


@pytest.mark.parametrize('path', ['auto', 'dense'])
@pytest.mark.parametrize('symmetrize,normalize', [(False, 'random_walk'), (True, 'random_walk'), (True, 'symmetric')])
def test_exp_kernel_large_logits_do_not_overflow(symmetrize, normalize, path):
    # rows whose largest logit lies far (> 100) below the largest logit of the sample: a shift common to
    # the sample leaves every exp of such a row below float32's smallest number
    q = 12 * _rand(1, 8, 4, seed=12, dtype=torch.float32)
    k = 12 * _rand(1, 8, 4, seed=13, dtype=torch.float32)
    logits = q @ k.transpose(1, 2)
    assert logits.max() - logits.amax(-1).min() > 200
    op = Affinity('exp_dot', symmetrize, normalize, path=path)(q, k)
    a = op.dense()
    z = _rand(1, 8, 3, seed=14, dtype=torch.float32)
    assert torch.isfinite(a).all(), a
    assert torch.isfinite(op.matmul(z)).all()
    ref = _stable_exp_affinity(symmetrize, normalize, q, k)
    assert torch.allclose(a.double(), ref, atol=1e-5), (a - ref).abs().max()


@pytest.mark.parametrize('kernel,symmetrize,normalize', [('exp_dot', False, 'random_walk'),
                                                         ('exp_dot', True, 'symmetric'),
                                                         ('relu_dot', True, 'symmetric'),
                                                         ('dot', False, 'size')])
def test_normalisation_runs_in_float32_under_autocast(kernel, symmetrize, normalize):
    q, k = _rand(2, 9, 4, seed=15, dtype=torch.float32), _rand(2, 9, 4, seed=16, dtype=torch.float32)
    z = _rand(2, 9, 5, seed=17, dtype=torch.float32)
    ref = Affinity(kernel, symmetrize, normalize)(q, k)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        op = Affinity(kernel, symmetrize, normalize)(q.bfloat16(), k.bfloat16())
        a = op.dense()
        out = op.matmul(z.bfloat16())
    assert a.dtype == torch.float32
    assert out.dtype == torch.bfloat16
    # only the bf16 rounding of q, k, z remains: the normalisation itself is float32
    assert ((a - ref.dense()).norm() / ref.dense().norm()).item() < 3e-2
    assert ((out.float() - ref.matmul(z)).norm() / ref.matmul(z).norm()).item() < 3e-2


def test_bad_arguments():
    with pytest.raises(ValueError,
                       match=r"kernel must be one of \('exp_dot', 'dot', 'relu_dot', 'softmax'\), got 'rbf'"):
        Affinity('rbf')
    with pytest.raises(ValueError, match=r"normalize must be one of \('none', 'size', 'random_walk', "
                                         r"'symmetric'\), got 'softmax'"):
        Affinity('relu_dot', normalize='softmax')
    with pytest.raises(ValueError, match=r"normalize='random_walk' needs a non-negative kernel: "
                                         r"kernel='relu_dot' or 'exp_dot'"):
        Affinity('dot', normalize='random_walk')
    with pytest.raises(TypeError, match=r"scale must be a number or 'inv_sqrt', got 'sqrt'"):
        Affinity(scale='sqrt')
    with pytest.raises(ValueError, match=r"path must be one of \('auto', 'dense', 'factored'\), got 'fast'"):
        Affinity(path='fast')
    aff = Affinity('relu_dot', True, 'symmetric')
    with pytest.raises(ValueError, match=r'as many queries as keys, got 4 and 5'):
        aff(_rand(1, 4, 3), _rand(1, 5, 3))
    with pytest.raises(ValueError, match=r'expects q \(B, N_q, c\) and k \(B, N_k, c\)'):
        aff(_rand(1, 4, 3), _rand(1, 4, 2))
    with pytest.raises(ValueError, match=r'expects q \(B, N_q, c\)'):
        aff(_rand(4, 3), _rand(4, 3))


@pytest.mark.parametrize('kernel', ['relu_dot', 'exp_dot'])
def test_symmetric_normalisation_needs_a_symmetric_kernel(kernel):
    # D^-1/2 M D^-1/2 scales rows and columns by one degree vector: only meaningful for a symmetric M
    with pytest.raises(ValueError, match=r"normalize='symmetric' .* needs a symmetric kernel: set "
                                         r"symmetrize=True"):
        Affinity(kernel, False, 'symmetric')
