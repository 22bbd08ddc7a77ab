"""Interlaced groupings: the permutations of the padded grid, and the block-sparse softmax affinity on a map's
positions, against float64 references written from the coordinates of the positions."""
import itertools
import math

import pytest
import torch
from tests.blocks.reference import batch_norm, chebyshev_matrices, conv1x1, randomise_, rel_err, tokens

from snl_mm.blocks import GraphNonlocalBlock
from snl_mm.graph import AFFINITIES, InterlacedAffinity, build_affinity
from snl_mm.graph.interlaced import crop_cells, gather_groups, pad_to_cells, regroup, scatter_groups

#: (spatial, down_factor): divisible and not, factors above the sides, 1D to 3D
CASES = [((8, ), 4), ((7, ), 3), ((16, 16), 8), ((9, 11), (4, 3)), ((5, 6), 8), ((3, 20), 8), ((4, 5, 6), 2),
         ((3, 4, 5), (2, 3, 2))]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _factors(spatial, factor):
    return (factor, ) * len(spatial) if isinstance(factor, int) else factor


def group_ids(spatial, factor, grouping):
    """The group of every position (row-major), from its coordinate in the padded grid: the offset in its cell
    (``'long'``) or its cell (``'short'``)."""
    factors = _factors(spatial, factor)
    before = [(math.ceil(n / f) * f - n) // 2 for n, f in zip(spatial, factors)]
    ids = []
    for coord in itertools.product(*[range(n) for n in spatial]):
        padded = [c + b for c, b in zip(coord, before)]
        key = [p % f for p, f in zip(padded, factors)] if grouping == 'long' else \
            [p // f for p, f in zip(padded, factors)]
        ids.append(tuple(key))
    return ids


def reference_affinity(q, k, spatial, factor, grouping, scale):
    """``softmax`` of ``s q_i . k_j`` over the ``j`` of ``i``'s group, zero elsewhere: ``(B, N, N)``."""
    ids = group_ids(spatial, factor, grouping)
    same = torch.tensor([[a == b for b in ids] for a in ids])
    logits = (scale * q @ k.transpose(1, 2)).masked_fill(~same, float('-inf'))
    return torch.softmax(logits, dim=-1)


def test_two_dimensional_groups_are_mmsegmentations():
    """ISAHead's layout: ``view(n, c, gh, lh, gw, lw)``, long groups ``permute(0, 3, 5, 1, 2, 4)``, short groups
    (from the long ones) ``permute(0, 4, 5, 3, 1, 2)``."""
    x = _randn(2, 3, 12, 10)
    padded = pad_to_cells(x, (4, 3))  # (12, 12): 0 rows, 2 columns of padding (1 before)
    assert padded.shape[2:] == (12, 12) and torch.equal(padded[..., 1:11], x)
    n, c, (gh, lh, gw, lw) = 2, 3, (3, 4, 4, 3)
    long = padded.view(n, c, gh, lh, gw, lw).permute(0, 3, 5, 1, 2, 4).reshape(-1, c, gh * gw)
    assert torch.equal(gather_groups(padded, (4, 3), 'long')[..., 0], long)
    short = long.view(n, lh, lw, c, gh, gw).permute(0, 4, 5, 3, 1, 2).reshape(-1, c, lh * lw)
    assert torch.equal(regroup(long.unsqueeze(-1), x, (4, 3))[..., 0], short)
    back = short.view(n, gh, gw, c, lh, lw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * lh, gw * lw)
    assert torch.equal(scatter_groups(short.unsqueeze(-1), x, (4, 3), 'short'), back)
    assert torch.equal(crop_cells(back, x, (4, 3)), x)


@pytest.mark.parametrize('spatial, factor', CASES, ids=str)
def test_permutations_round_trip(spatial, factor):
    x = _randn(2, 3, *spatial)
    padded = pad_to_cells(x, factor)
    for grouping in ('long', 'short'):
        groups = gather_groups(padded, factor, grouping)
        assert torch.equal(scatter_groups(groups, x, factor, grouping), padded)
    assert torch.equal(regroup(gather_groups(padded, factor, 'long'), x, factor),
                       gather_groups(padded, factor, 'short'))
    assert torch.equal(crop_cells(padded, x, factor), x)


@pytest.mark.parametrize('grouping', ['long', 'short'])
@pytest.mark.parametrize('spatial, factor', CASES, ids=str)
def test_operator_against_dense_reference(spatial, factor, grouping):
    n = math.prod(spatial)
    q, k, z = _randn(2, n, 4, seed=1), _randn(2, n, 4, seed=2), _randn(2, n, 5, seed=3)
    op = InterlacedAffinity(factor, grouping)(q, k, spatial)
    a = reference_affinity(q, k, spatial, factor, grouping, 0.5)
    assert rel_err(op.dense(), a) < 1e-12
    assert rel_err(op.matmul(z), a @ z) < 1e-12


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_graph_block_with_the_interlaced_affinity(training):
    spatial = (5, 7)
    block = randomise_(GraphNonlocalBlock(8, affinity=dict(type='interlaced', down_factor=(2, 3), grouping='short'),
                                          graph_filter=dict(order=3))).double().train(training)
    x = _randn(2, 8, *spatial, seed=4)
    xf = x.flatten(2)
    a = reference_affinity(tokens(conv1x1(xf, block.theta)), tokens(conv1x1(xf, block.phi)), spatial, (2, 3),
                           'short', 0.5)
    z = tokens(conv1x1(xf, block.g))
    t = chebyshev_matrices(a, 3)
    out = sum(conv1x1(tokens(t[i] @ z), getattr(block, f'w{i + 1}')) for i in range(3))
    assert rel_err(block(x), x + batch_norm(out, block.norm, training).reshape(x.shape)) < 1e-10


def test_gradcheck():
    spatial = (3, 5)
    q, k, z = (_randn(1, 15, 3, seed=s).requires_grad_() for s in (5, 6, 7))
    assert torch.autograd.gradcheck(lambda q, k, z: InterlacedAffinity(2, 'long')(q, k, spatial).matmul(z),
                                    (q, k, z))


def test_registered_and_validated():
    assert AFFINITIES['interlaced'] is InterlacedAffinity
    affinity = build_affinity(dict(type='interlaced', down_factor=(8, 8), grouping='short'))
    assert affinity.notation == 'D_(G_s.M)^-1 (G_s.M)'
    for bad in [0, (8, 0), 'eight', (8, 8, 8, 8), 2.0]:
        with pytest.raises(ValueError, match='down_factor must be a positive int'):
            InterlacedAffinity(bad)
    with pytest.raises(ValueError, match='grouping must be one of'):
        InterlacedAffinity(grouping='local')
    q = torch.zeros(1, 30, 4)
    with pytest.raises(ValueError, match='down_factor=\\(8, 8\\) gives a cell size for 2 axes, the input has 1'):
        InterlacedAffinity((8, 8))(q, q, (30, ))
    with pytest.raises(ValueError, match='spatial must be its shape'):
        InterlacedAffinity()(q, q, (5, 7))
