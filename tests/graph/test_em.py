"""The expectation-maximisation affinity of EMANet: EM iterations, the rank-K affinity ``A = Z D_mu^-1 Z~^T`` and its
reconstruction, its normalisations and Chebyshev filters through the factors, the bases' moving average, and
gradients; against float64 references written from the formulas and against mmsegmentation's ``EMAModule``."""
import pytest
import torch
import torch.nn.functional as F

from snl_mm.blocks import GraphNonlocalBlock
from snl_mm.graph import AFFINITIES, EMAffinity, build_affinity
from snl_mm.utils import mmseg_available
from tests.helpers import randomise_, rel_err


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _affinity(channels=6, num_bases=4, num_stages=3, seed=0, **kwargs) -> EMAffinity:
    aff = EMAffinity(channels, num_bases, num_stages, **kwargs).double()
    with torch.no_grad():
        bases = _randn(1, channels, num_bases, seed=seed)
        aff.bases.copy_(bases / bases.norm(dim=1, keepdim=True))
    return aff


def em_reference(x: torch.Tensor, bases: torch.Tensor, num_stages: int):
    """EM from the formulas, float64: ``Z = softmax_K(X mu)``, ``Z~ = Z / sum_N Z``, ``mu = X^T Z~ / ||X^T Z~||``.

    Returns:
        dict: the last ``Z``, ``Z~``, the norms ``||X^T Z~_k||``, the bases of the last E step and the final ones,
        the affinity ``A = Z diag(1 / ||X^T Z~||) Z~^T`` and the reconstruction ``Z mu^T``.
    """
    mu = bases.expand(x.shape[0], -1, -1)
    for _ in range(num_stages):
        previous = mu
        logits = x @ mu
        z = torch.exp(logits - logits.max(dim=2, keepdim=True).values)
        z = z / z.sum(dim=2, keepdim=True)
        z_tilde = z / z.sum(dim=1, keepdim=True)
        raw = x.transpose(1, 2) @ z_tilde
        norms = torch.sqrt((raw ** 2).sum(dim=1, keepdim=True))
        mu = raw / norms
    a = z @ (z_tilde / norms).transpose(1, 2)
    return dict(z=z, z_tilde=z_tilde, norms=norms, previous=previous, bases=mu, affinity=a,
                reconstruction=z @ mu.transpose(1, 2))


def test_affinity_and_reconstruction_equal_the_formulas():
    aff = _affinity().eval()
    x, z = _randn(2, 15, 6, seed=1), _randn(2, 15, 3, seed=2)
    ref = em_reference(x, aff.bases, 3)
    op = aff(x, x, (3, 5))
    assert op.dense().shape == (2, 15, 15)
    assert rel_err(op.dense(), ref['affinity']) < 1e-12
    assert torch.linalg.matrix_rank(op.dense()).max() <= 4
    # applied to the features it ran on: the reconstruction Z mu^T (= A X); any other signal: A z
    assert rel_err(op.matmul(x), ref['reconstruction']) < 1e-12
    assert rel_err(ref['affinity'] @ x, ref['reconstruction']) < 1e-12
    assert rel_err(op.matmul(z), ref['affinity'] @ z) < 1e-12
    assert rel_err(op.matmul(x.clone()), ref['reconstruction']) < 1e-12  # the factored order, same numbers


def test_queries_other_than_the_keys():
    """EM on the keys; the queries' responsibilities under the bases of the last E step."""
    aff = _affinity().eval()
    q, k, z = _randn(2, 10, 6, seed=3), _randn(2, 10, 6, seed=4), _randn(2, 10, 2, seed=5)
    ref = em_reference(k, aff.bases, 3)
    z_q = torch.softmax(q @ ref['previous'], dim=2)
    expected = z_q @ (ref['z_tilde'] / ref['norms']).transpose(1, 2)
    op = aff(q, k)
    assert rel_err(op.dense(), expected) < 1e-12
    assert rel_err(op.matmul(z), expected @ z) < 1e-12


@pytest.mark.parametrize('normalize', ['random_walk', 'symmetric'])
def test_normalisations_through_the_factors(normalize):
    aff = _affinity(normalize=normalize).eval()
    x, z = _randn(2, 12, 6, seed=6), _randn(2, 12, 3, seed=7)
    a = em_reference(x, aff.bases, 3)['affinity']
    if normalize == 'symmetric':
        m = (a + a.transpose(1, 2)) / 2
        d = m.sum(dim=2)
        expected = m / torch.sqrt(d[:, :, None] * d[:, None, :])
    else:
        expected = a / a.sum(dim=2, keepdim=True)
    op = aff(x, x)
    assert op.path == 'factored'
    assert rel_err(op.dense(), expected) < 1e-12
    assert rel_err(op.matmul(z), expected @ z) < 1e-12
    assert rel_err(op.matmul(x), expected @ x) < 1e-12  # no reconstruction shortcut for a normalised A
    if normalize == 'symmetric':
        eig = torch.linalg.eigvalsh(expected)
        assert eig.max() == pytest.approx(1.0, abs=1e-10) and eig.min() >= -1 - 1e-10


@pytest.mark.parametrize('normalize', ['none', 'symmetric'])
def test_core_carries_the_spectrum(normalize):
    """The ``K x K`` core (``2K`` symmetrised) has the non-zero eigenvalues of the ``N x N`` affinity."""
    aff = _affinity(normalize=normalize).eval()
    x = _randn(1, 20, 6, seed=18)
    op = aff(x, x)
    core = op.core()
    assert core.shape == ((1, 4, 4) if normalize == 'none' else (1, 8, 8))
    dense = torch.linalg.eigvals(op.dense()[0])
    small = torch.linalg.eigvals(core[0])
    dense = dense[dense.abs() > 1e-9]
    small = small[small.abs() > 1e-9]
    key = lambda t: sorted(t.tolist(), key=lambda c: (round(c.real, 8), round(c.imag, 8)))  # noqa: E731
    assert len(dense) == len(small)
    assert all(abs(a - b) < 1e-8 for a, b in zip(key(dense), key(small)))


def _conv(t: torch.Tensor, m: torch.nn.Module) -> torch.Tensor:
    return m.weight.reshape(m.weight.shape[0], -1) @ t


def test_snl_normalisation_of_the_em_affinity_with_a_third_order_filter():
    """``GraphNonlocalBlock(affinity=dict(type='em', normalize='symmetric'), graph_filter=dict(order=3))``: SNL's
    symmetric normalisation of the rank-K EM affinity, ``T_2`` included, computed through the factors; float64
    against the dense formula."""
    block = GraphNonlocalBlock(8, affinity=dict(type='em', num_bases=3, normalize='symmetric'),
                               graph_filter=dict(order=3))
    assert block.graph.channels == 4 and tuple(block.graph.bases.shape) == (1, 4, 3)
    block = randomise_(block, std=0.4, seed=3).double().eval()
    with torch.no_grad():
        block.graph.bases.copy_(F.normalize(_randn(1, 4, 3, seed=8), dim=1))
    x = _randn(2, 8, 3, 4, seed=9)
    xf = x.reshape(2, 8, -1)
    q, k, g = (_conv(xf, m).transpose(1, 2) for m in (block.theta, block.phi, block.g))
    ref = em_reference(k, block.graph.bases, 3)
    z_q = torch.softmax(q @ ref['previous'], dim=2)
    a = z_q @ (ref['z_tilde'] / ref['norms']).transpose(1, 2)
    m = (a + a.transpose(1, 2)) / 2
    d = m.sum(dim=2)
    a = m / torch.sqrt(d[:, :, None] * d[:, None, :])
    terms = [g, a @ g]
    terms.append(2 * a @ terms[1] - g)
    out = sum(_conv(t.transpose(1, 2), getattr(block, f'w{i + 1}')) for i, t in enumerate(terms))
    bn = block.norm
    out = (out - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + bn.eps)
    expected = xf + out * bn.weight[None, :, None] + bn.bias[None, :, None]
    with torch.no_grad():
        assert rel_err(block(x), expected.reshape(x.shape)) < 1e-10
    assert block.spectral_form()['affinity'] == 'D_M^-1/2 M_hat D_M^-1/2, M = Z D_mu^-1 Z~^T'


def test_moving_average_moves_in_training_only():
    aff = _affinity(momentum=0.3)
    x = _randn(3, 9, 6, seed=10)
    before = aff.bases.clone()
    ref = em_reference(x, before, 3)
    target = ref['bases'].mean(dim=0, keepdim=True)
    target = target / target.norm(dim=1, keepdim=True)
    aff.eval()(x, x)
    assert torch.equal(aff.bases, before)
    aff.train()(x, x, update=False)
    assert torch.equal(aff.bases, before)
    op = aff(x, x)
    assert rel_err(aff.bases, 0.7 * before + 0.3 * target) < 1e-12
    # the operator of that call used the bases before the move
    assert rel_err(op.matmul(x), ref['reconstruction']) < 1e-12


def test_gradients_none_and_full():
    """``grad='none'`` (EMANet): the EM factors are constants, the signal gets ``A^T`` of the output's gradient and
    the keys nothing; ``grad='full'``: exact gradients through the iterations (gradcheck)."""
    aff = _affinity().eval()
    x = _randn(2, 8, 6, seed=11).requires_grad_()
    z = _randn(2, 8, 3, seed=12).requires_grad_()
    w = _randn(2, 8, 3, seed=13)
    op = aff(x, x)
    assert not op.p.requires_grad and not op.q.requires_grad
    (op.matmul(z) * w).sum().backward()
    assert x.grad is None
    assert rel_err(z.grad, op.dense().transpose(1, 2) @ w) < 1e-12
    # the reconstruction of features that need a gradient goes through the factors: A^T w reaches them
    x.grad = None
    (op.matmul(x) * _randn(2, 8, 6, seed=14)).sum().backward()
    assert rel_err(x.grad, op.dense().transpose(1, 2) @ _randn(2, 8, 6, seed=14)) < 1e-12

    full = _affinity(num_stages=2, grad='full').eval()
    xs = _randn(1, 5, 6, seed=15).requires_grad_()
    zs = _randn(1, 5, 2, seed=16).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: full(t, t).matmul(t), (xs, ))
    assert torch.autograd.gradcheck(lambda t, s: full(t, t).matmul(s), (xs, zs))
    sym = _affinity(num_stages=2, grad='full', normalize='symmetric').eval()
    assert torch.autograd.gradcheck(lambda t: sym(t, t).matmul(t), (xs, ))


@pytest.mark.parametrize('with_bias', [True, False], ids=['bias', 'no_bias'])
def test_affine_features_folded_into_the_iterations(with_bias):
    """With ``weight`` and ``bias`` the EM runs on the features ``x W^T + b`` without forming them: the same
    factors, affinity and reconstruction as on the formed features, float64; gradients exact with ``grad='full'``."""
    aff = _affinity().eval()
    x = _randn(2, 15, 5, seed=21)
    weight, bias = _randn(6, 5, seed=22), _randn(6, seed=23) if with_bias else None
    features = x @ weight.t() + (0 if bias is None else bias)
    ref = em_reference(features, aff.bases, 3)
    op = aff(x, x, weight=weight, bias=bias)
    assert op.features is None and op.keys is x
    assert rel_err(op.dense(), ref['affinity']) < 1e-12
    assert rel_err(op.reconstruction(), ref['reconstruction']) < 1e-12
    assert rel_err(aff(features, features).reconstruction(), ref['reconstruction']) < 1e-12
    assert rel_err(op.matmul(features), ref['reconstruction']) < 1e-12  # a formed signal through the factors

    full = _affinity(num_stages=2, grad='full').eval()
    xs = _randn(1, 5, 4, seed=24).requires_grad_()
    ws = _randn(6, 4, seed=25).requires_grad_()
    bs = _randn(6, seed=26).requires_grad_() if with_bias else None
    inputs = (xs, ws) + ((bs, ) if with_bias else ())
    assert torch.autograd.gradcheck(lambda t, w, *b: full(t, t, weight=w, bias=b[0] if b else None).reconstruction(),
                                    inputs)


def test_affine_features_validated():
    aff = _affinity()
    x = _randn(2, 7, 5, seed=27)
    with pytest.raises(ValueError, match='the queries are the keys'):
        aff(x.clone(), x, weight=_randn(6, 5))
    with pytest.raises(ValueError, match=r'expects weight \(6, C\), got \(5, 5\)'):
        aff(x, x, weight=_randn(5, 5))
    with pytest.raises(ValueError, match=r'expects q and k of one shape \(B, N, 4\)'):
        aff(x, x, weight=_randn(6, 4))
    with pytest.raises(ValueError, match='only for normalize="none"'):
        _affinity(normalize='symmetric')(x, x, weight=_randn(6, 5)).reconstruction()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
def test_iterations_in_float32_under_autocast(dtype):
    aff = _affinity(channels=8, num_bases=5).float().eval()
    x = 30 * _randn(2, 40, 8, seed=17, dtype=torch.float32)
    expected = aff(x, x).matmul(x)
    with torch.autocast('cpu', dtype=dtype):
        op = aff(x, x)
        out = op.matmul(x.to(dtype))
    assert op.p.dtype == torch.float32 and out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out.float(), expected) < 2e-2
    half = _affinity(channels=8, num_bases=5).to(dtype).eval()  # a half-precision buffer
    assert torch.isfinite(half(x.to(dtype), x.to(dtype)).matmul(x.to(dtype))).all()


def test_registered_and_validated():
    assert AFFINITIES['em'] is EMAffinity
    aff = build_affinity(dict(type='em', channels=4, num_bases=2))
    assert isinstance(aff, EMAffinity) and tuple(aff.bases.shape) == (1, 4, 2)
    assert torch.allclose(aff.bases.norm(dim=1), torch.ones(1, 2))
    assert aff.notation == 'Z D_mu^-1 Z~^T'
    assert list(aff.state_dict()) == ['bases']
    with pytest.raises(ValueError, match='num_bases must be a positive integer'):
        EMAffinity(4, num_bases=0)
    with pytest.raises(ValueError, match='num_stages must be a positive integer'):
        EMAffinity(4, num_stages=0)
    with pytest.raises(ValueError, match=r'momentum must be a number in \[0, 1\]'):
        EMAffinity(4, momentum=1.5)
    with pytest.raises(ValueError, match=r"normalize must be one of \('none', 'random_walk', 'symmetric'\)"):
        EMAffinity(4, normalize='size')
    with pytest.raises(ValueError, match=r"grad must be one of \('none', 'full'\)"):
        EMAffinity(4, grad='values')
    with pytest.raises(ValueError, match=r'expects q and k of one shape \(B, N, 4\)'):
        EMAffinity(4)(_randn(1, 5, 3, dtype=torch.float32), _randn(1, 5, 3, dtype=torch.float32))


@pytest.mark.skipif(not mmseg_available(), reason='mmsegmentation needs a compiled mmcv')
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_equals_mmsegmentation_ema_module(training):
    """mmsegmentation's ``EMAModule`` with the same bases: the same reconstruction (float32) and, in training, the same
    moving average after the step."""
    from mmseg.models.decode_heads.ema_head import EMAModule
    torch.manual_seed(0)
    upstream = EMAModule(16, 8, 3, 0.2).train(training)
    ours = EMAffinity(16, 8, 3, 0.2).train(training)
    ours.load_state_dict(upstream.state_dict(), strict=True)
    feats = torch.randn(2, 16, 6, 7, generator=torch.Generator().manual_seed(1))
    before = upstream.bases.clone()
    expected = upstream(feats)
    t = feats.flatten(2).transpose(1, 2)
    got = ours(t, t).matmul(t).transpose(1, 2).reshape(feats.shape)
    assert rel_err(got, expected) < 1e-5
    assert rel_err(ours.bases, upstream.bases) < 1e-6
    assert torch.equal(ours.bases, before) == (not training)
