"""Pyramid-pooled anchors: the pooling, the operator ``A = R P``, its core and Chebyshev terms, and the affinity in
``GraphNonlocalBlock``, against float64 references built from adaptive average pooling and dense matrices."""
import pytest
import torch
import torch.nn.functional as F
from tests.blocks.reference import batch_norm, chebyshev_matrices, conv1x1, randomise_, rel_err, tokens

from snl_mm.blocks import GraphNonlocalBlock
from snl_mm.graph import AFFINITIES, PyramidAnchors, build_affinity, pyramid_pool
from snl_mm.graph.anchors import num_anchors

SCALES = (1, 3, 6, 8)
ADAPTIVE = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
#: maps of each rank, sides below, at and above the scales
MAPS = [(7, ), (20, ), (5, 6), (9, 17), (1, 1), (3, 4, 5), (2, 9, 7)]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference_pool(m: torch.Tensor, scales=SCALES) -> torch.Tensor:
    """``(B, c, *S) -> (B, S_anchors, c)``: adaptive average pooling per scale, concatenated (``PPMConcat``)."""
    pool = ADAPTIVE[m.dim() - 2]
    return torch.cat([pool(m, s).flatten(2) for s in scales], dim=2).transpose(1, 2)


def reference_affinity(q_map: torch.Tensor, k_map: torch.Tensor, scale: float, scales=SCALES) -> torch.Tensor:
    """``A = softmax(s Q (P K)^T) P`` ``(B, N_q, N_k)`` with ``P`` adaptive pooling of the identity."""
    b, c = k_map.shape[:2]
    n = k_map[0, 0].numel()
    r = torch.softmax(scale * tokens(q_map.flatten(2)) @ reference_pool(k_map, scales).transpose(1, 2), dim=-1)
    eye = torch.eye(n, dtype=k_map.dtype).reshape(n, 1, *k_map.shape[2:])  # N signals of one channel
    p = reference_pool(eye, scales)[:, :, 0].T  # (S, N)
    return r @ p


@pytest.mark.parametrize('spatial', MAPS, ids=str)
def test_pyramid_pool_is_adaptive_average_pooling(spatial):
    m = _randn(2, 5, *spatial)
    got = pyramid_pool(tokens(m.flatten(2)), spatial, SCALES)
    assert got.shape == (2, num_anchors(SCALES, len(spatial)), 5)
    assert rel_err(got, reference_pool(m)) < 1e-14


@pytest.mark.parametrize('spatial', MAPS, ids=str)
def test_operator_against_dense_reference(spatial):
    q_map, k_map, z = _randn(2, 4, *spatial, seed=1), _randn(2, 4, *spatial, seed=2), _randn(2, 3, *spatial, seed=3)
    op = PyramidAnchors()(tokens(q_map.flatten(2)), tokens(k_map.flatten(2)), spatial)
    a = reference_affinity(q_map, k_map, 0.5)  # inv_sqrt of 4 channels
    assert rel_err(op.dense(), a) < 1e-12
    zt = tokens(z.flatten(2))
    assert rel_err(op.matmul(zt), a @ zt) < 1e-12
    assert torch.allclose(a.sum(-1), torch.ones(()).double())  # row-stochastic


def test_queries_and_keys_of_different_maps():
    """AFNB's case: queries of one map, keys pooled from another of other sizes: ``A`` is ``N_q x N_k``."""
    q_map, k_map, z = _randn(2, 4, 5, 6, seed=1), _randn(2, 4, 9, 3, seed=2), _randn(2, 3, 9, 3, seed=3)
    op = PyramidAnchors(scale=0.3)(tokens(q_map.flatten(2)), tokens(k_map.flatten(2)), (9, 3))
    a = reference_affinity(q_map, k_map, 0.3)
    assert a.shape == (2, 30, 27)
    assert rel_err(op.matmul(tokens(z.flatten(2))), a @ tokens(z.flatten(2))) < 1e-12


@pytest.mark.parametrize('spatial', [(7, ), (5, 6), (3, 4, 5)], ids=str)
def test_core_has_the_nonzero_spectrum_and_gives_the_chebyshev_terms(spatial):
    q_map, k_map = _randn(1, 4, *spatial, seed=4), _randn(1, 4, *spatial, seed=5)
    op = PyramidAnchors(pool_scales=(1, 2, 3))(tokens(q_map.flatten(2)), tokens(k_map.flatten(2)), spatial)
    a = reference_affinity(q_map, k_map, 0.5, (1, 2, 3))
    core = op.core()
    s = num_anchors((1, 2, 3), len(spatial))
    assert core.shape == (1, s, s)
    eig_core = torch.linalg.eigvals(core[0])
    eig_a = torch.linalg.eigvals(a[0])
    # A = R P has rank <= S: its eigenvalues are those of C = P R and N - S zeros
    big = eig_a[eig_a.abs() > 1e-9]
    assert len(big) <= s
    for lam in big:
        assert (eig_core - lam).abs().min() < 1e-8
    z = tokens(_randn(1, 3, *spatial, seed=6).flatten(2))
    terms = op.chebyshev_basis(z, 5)
    for t, t_ref in zip(terms, chebyshev_matrices(a, 5)):
        assert rel_err(t, t_ref @ z) < 1e-11


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('spatial', [(7, ), (5, 6), (3, 4, 5)], ids=str)
def test_graph_block_with_anchors_and_a_third_order_filter(spatial, training):
    """``GraphNonlocalBlock(affinity=dict(type='pyramid_anchors'), graph_filter=dict(order=3))``:
    ``Y = X + BN(sum_k T_k(A) Z W_{k+1})`` with the dense ``A = R P``, float64."""
    block = randomise_(GraphNonlocalBlock(8, affinity=dict(type='pyramid_anchors'), graph_filter=dict(order=3)))
    block = block.double().train(training)
    x = _randn(2, 8, *spatial, seed=7)
    xf = x.flatten(2)
    theta, phi = conv1x1(xf, block.theta).reshape(2, 4, *spatial), conv1x1(xf, block.phi).reshape(2, 4, *spatial)
    a = reference_affinity(theta, phi, 0.5)
    z = tokens(conv1x1(xf, block.g))
    t = chebyshev_matrices(a, 3)
    out = sum(conv1x1(tokens(t[k] @ z), getattr(block, f'w{k + 1}')) for k in range(3))
    expected = x + batch_norm(out, block.norm, training).reshape(x.shape)
    assert rel_err(block(x), expected) < 1e-10
    assert rel_err(block.affinity(x), a) < 1e-12


def test_gradcheck():
    spatial = (3, 4)
    q, k, z = (tokens(_randn(1, 3, *spatial, seed=s).flatten(2)).requires_grad_() for s in (8, 9, 10))
    assert torch.autograd.gradcheck(
        lambda q, k, z: PyramidAnchors(pool_scales=(1, 2))(q, k, spatial).chebyshev_basis(z, 3)[-1], (q, k, z))


def test_registered_and_validated():
    assert AFFINITIES['pyramid_anchors'] is PyramidAnchors
    affinity = build_affinity(dict(type='pyramid_anchors', pool_scales=(1, 2)))
    assert affinity.pool_scales == (1, 2) and affinity.notation == 'D_M^-1 M P'
    for bad in [(), (0, 3), (1.5, ), 'abc', (True, )]:
        with pytest.raises(ValueError, match='pool_scales must be a non-empty sequence of positive integers'):
            PyramidAnchors(pool_scales=bad)
    with pytest.raises(TypeError, match="scale must be a number or 'inv_sqrt'"):
        PyramidAnchors(scale='sqrt')
    q = torch.zeros(1, 30, 4)
    with pytest.raises(ValueError, match='spatial must be its shape'):
        PyramidAnchors()(q, q, (5, 7))
    with pytest.raises(TypeError, match=r"type .pyramid_anchors. takes the arguments of PyramidAnchors"):
        GraphNonlocalBlock(8, affinity=dict(type='pyramid_anchors', kernel='dot'))
