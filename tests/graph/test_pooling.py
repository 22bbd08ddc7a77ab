"""The rank-one pooling affinity ``A = 1 s^T`` (GC, SE, DNL's unary term), the sum of operators and DNL's
disentangled affinity: against their formulas in float64, ``A^2 = A`` and the Chebyshev terms, no ``N`` copies of the
context, half precision and argument validation."""
import pytest
import torch

from snl_mm.graph import (AFFINITIES, DenseOperator, DisentangledAffinity, PoolingAffinity, RankOneOperator,
                          SumOperator, build_affinity, chebyshev_basis)
from tests.blocks.reference import chebyshev_matrices, softmax_rows
from tests.helpers import rel_err


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _pooling_formula(pooling: str, logits: torch.Tensor, n_q: int) -> torch.Tensor:
    """``1 s^T`` written out: ``(B, N_q, N_k)``."""
    b, n_k = logits.shape[:2]
    if pooling == 'avg':
        s = torch.full((b, n_k), 1.0 / n_k, dtype=logits.dtype)
    else:
        e = torch.exp(logits[..., 0] - logits[..., 0].amax(1, keepdim=True))
        s = e / e.sum(1, keepdim=True)
    return torch.ones(b, n_q, 1, dtype=logits.dtype) @ s[:, None, :]


@pytest.mark.parametrize('pooling', ['att', 'avg'])
def test_dense_and_matmul_match_the_formula(pooling):
    q, logits, z = _rand(2, 6, 3, seed=1), _rand(2, 9, 1, seed=2), _rand(2, 9, 4, seed=3)
    op = PoolingAffinity(pooling)(q, logits)
    a = _pooling_formula(pooling, logits, 6)
    assert rel_err(op.dense(), a) < 1e-14
    assert torch.allclose(op.dense().sum(-1), torch.ones(2, 6, dtype=torch.float64))
    assert rel_err(op.matmul(z), a @ z) < 1e-14
    assert op.matmul(z).shape == (2, 6, 4)


def test_own_projection_of_the_keys():
    affinity = PoolingAffinity('att', channels=5).double()
    with torch.no_grad():
        affinity.mask.weight.copy_(_rand(1, 5, seed=4))
        affinity.mask.bias.fill_(0.3)
    k, z = _rand(2, 7, 5, seed=5), _rand(2, 7, 3, seed=6)
    logits = k @ affinity.mask.weight.T + 0.3
    op = affinity(k, k)
    assert rel_err(op.matmul(z), _pooling_formula('att', logits, 7) @ z) < 1e-14
    assert [n for n, _ in affinity.named_parameters()] == ['mask.weight', 'mask.bias']


def test_the_context_is_broadcast_not_copied():
    op = PoolingAffinity('att')(_rand(2, 50, 3), _rand(2, 50, 1, seed=1))
    out = op.matmul(_rand(2, 50, 8, seed=2))
    assert out.shape == (2, 50, 8) and out.stride(1) == 0  # one row per sample in memory
    assert op.context(_rand(2, 50, 8, seed=2)).shape == (2, 1, 8)


@pytest.mark.parametrize('pooling', ['att', 'avg'])
def test_idempotent_and_chebyshev_terms(pooling):
    """``A^2 = A``; every Chebyshev term ``T_k(A) Z`` from the operator equals the dense one (float64)."""
    logits, z = _rand(2, 8, 1, seed=7), _rand(2, 8, 3, seed=8)
    op = PoolingAffinity(pooling)(logits, logits)
    az = op.matmul(z)
    assert rel_err(op.matmul(az), az) < 1e-14
    a = _pooling_formula(pooling, logits, 8)
    for got, t in zip(chebyshev_basis(op.matmul, z, 5), chebyshev_matrices(a, 5)):
        assert rel_err(got, t @ z) < 1e-13
    # the spectrum: the core's eigenvalue (1) and zeros
    eig = torch.linalg.eigvals(a[0]).real.sort().values
    assert torch.allclose(op.core(), torch.ones(2, 1, 1, dtype=torch.float64))
    assert torch.allclose(eig[-1:], op.core()[0, 0]) and eig[:-1].abs().max() < 1e-6


def test_sum_operator():
    a1, a2 = _rand(2, 5, 5, seed=9), _rand(2, 5, 5, seed=10)
    op = SumOperator(DenseOperator(a1), DenseOperator(a2))
    z = _rand(2, 5, 3, seed=11)
    assert rel_err(op.matmul(z), (a1 + a2) @ z) < 1e-14
    assert rel_err(op.dense(), a1 + a2) < 1e-15
    with pytest.raises(ValueError, match='at least one operator'):
        SumOperator()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
def test_half_precision_sums_in_float32(dtype):
    """Signals near float16's largest value: the weighted sum over 4096 positions stays finite (float32 sums), the
    context comes back in the compute dtype."""
    z = torch.full((1, 4096, 2), 60000.0).to(dtype)
    for pooling in ('att', 'avg'):
        op = PoolingAffinity(pooling)(z, torch.zeros(1, 4096, 1, dtype=dtype))
        out = op.matmul(z)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert rel_err(out.float(), z.float()) < 1e-2
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = PoolingAffinity('avg')(z.float(), z.float()).matmul(z.float())
    assert out.dtype == torch.bfloat16


def _disentangled_formula(q, k, logits, scale, temperature):
    qc, kc = q - q.mean(1, keepdim=True), k - k.mean(1, keepdim=True)
    pairwise = softmax_rows(scale / temperature * qc @ kc.transpose(1, 2))
    return pairwise + _pooling_formula('att', logits, q.shape[1])


def test_disentangled_affinity_matches_the_formula():
    q, k, logits, z = _rand(2, 6, 4, seed=12), _rand(2, 6, 4, seed=13), _rand(2, 6, 1, seed=14), _rand(2, 6, 3)
    affinity = DisentangledAffinity()  # DNL's: scale 1 / sqrt(c), temperature 0.05
    op = affinity(q, k, (2, 3), unary_logits=logits)
    a = _disentangled_formula(q, k, logits, 4 ** -0.5, 0.05)
    assert rel_err(op.dense(), a) < 1e-12
    assert rel_err(op.matmul(z), a @ z) < 1e-12
    assert affinity.notation == 'D_M_w^-1 M_w + 1 s^T'
    assert not list(affinity.parameters())


def test_disentangled_affinity_with_its_own_unary_projection_and_chebyshev_terms():
    """The config form for GraphNonlocalBlock: ``build_affinity(dict(type='disentangled', channels=c))`` owns the
    unary logits ``k w + b``; the terms ``T_k(A) Z`` of ``A = A_p + 1 s^T`` equal the dense ones."""
    affinity = build_affinity(dict(type='disentangled', channels=4, temperature=0.5)).double()
    assert [n for n, _ in affinity.named_parameters()] == ['unary.mask.weight', 'unary.mask.bias']
    with torch.no_grad():
        affinity.unary.mask.weight.copy_(_rand(1, 4, seed=15))
    q, k, z = _rand(2, 7, 4, seed=16), _rand(2, 7, 4, seed=17), _rand(2, 7, 3, seed=18)
    logits = k @ affinity.unary.mask.weight.T + affinity.unary.mask.bias
    a = _disentangled_formula(q, k, logits, 4 ** -0.5, 0.5)
    op = affinity(q, k)
    for got, t in zip(chebyshev_basis(op.matmul, z, 4), chebyshev_matrices(a, 4)):
        assert rel_err(got, t @ z) < 1e-12


def test_registered_types():
    assert AFFINITIES['pooling'] is PoolingAffinity and AFFINITIES['disentangled'] is DisentangledAffinity
    assert isinstance(build_affinity(dict(type='pooling', pooling='avg'))(_rand(1, 3, 2), _rand(1, 3, 2)),
                      RankOneOperator)
    assert PoolingAffinity('att').notation == '1 s^T' and PoolingAffinity('avg').notation == '1 1^T / N'


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"pooling must be one of \('att', 'avg'\), got 'max'"):
        PoolingAffinity('max')
    assert not list(PoolingAffinity('avg', channels=4).parameters())
    with pytest.raises(ValueError, match='channels must be a positive integer'):
        PoolingAffinity('att', channels=0)
    with pytest.raises(ValueError, match=r'takes the attention logits as keys, \(B, N_k, 1\).*channels=4'):
        PoolingAffinity('att')(_rand(1, 3, 4), _rand(1, 3, 4))
    with pytest.raises(ValueError, match='built for keys of channels=4, got 3'):
        PoolingAffinity('att', channels=4).double()(_rand(1, 3, 3), _rand(1, 3, 3))
    with pytest.raises(ValueError, match='without channels takes the unary logits'):
        DisentangledAffinity()(_rand(1, 3, 4), _rand(1, 3, 4))
    with pytest.raises(ValueError, match='projects its own unary logits'):
        DisentangledAffinity(channels=4).double()(_rand(1, 3, 4), _rand(1, 3, 4), unary_logits=_rand(1, 3, 1))
    with pytest.raises(ValueError, match='temperature must be a number > 0'):
        DisentangledAffinity(temperature=0)
