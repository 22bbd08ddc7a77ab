"""The cost model that picks the dense or the factored order of products of a low-rank affinity."""
import pytest
import torch

from snl_mm.graph import Affinity
from snl_mm.graph.cost import DENSE_LIMIT_BYTES, PATHS, choose_path, dense_flops, factored_flops


def test_snl_at_imagenet_res4_is_dense_and_large_maps_are_factored():
    # Cs = 512 (ResNet-50 res4, 1024 channels, reduction 2)
    assert choose_path(196, 196, 512, 512, symmetric=True) == 'dense'
    for n in (4096, 9216, 16384, 56 * 56):
        assert choose_path(n, n, 512, 512, symmetric=True) == 'factored', n


@pytest.mark.parametrize('rank', [8, 32, 64, 512])
def test_single_switch_near_twice_the_rank(rank):
    paths = [choose_path(n, n, rank, rank, symmetric=True) for n in range(1, 8 * rank)]
    switch = paths.index('factored') + 1
    assert set(paths[:switch - 1]) == {'dense'} and set(paths[switch - 1:]) == {'factored'}
    assert rank <= switch <= 4 * rank, switch


def test_flop_counts():
    n, c = 100, 8
    # dense: form M (2 N^2 c), symmetrise + degrees + two scalings (4 N^2), apply (2 N^2 c)
    assert dense_flops(n, n, c, c, True) == 2 * n * n * c + 4 * n * n + 2 * n * n * c
    assert dense_flops(n, n, c, c, False) == 2 * n * n * c + 3 * n * n + 2 * n * n * c
    # factored: Q^T Z and P (.) (4 N c c_z) and the degrees (4 N c), twice when symmetrised
    assert factored_flops(n, n, c, c, False) == 4 * n * c * c + 4 * n * c
    assert factored_flops(n, n, c, c, True) == 2 * factored_flops(n, n, c, c, False)


def test_forced_paths_and_memory_bound():
    assert choose_path(4096, 4096, 512, 512, True, path='dense') == 'dense'
    assert choose_path(16, 16, 512, 512, True, path='factored') == 'factored'
    assert choose_path(196, 196, 512, 512, True, batch=1) == 'dense'
    # a batch whose dense affinities pass the memory bound takes the factored order whatever the flops
    batch = DENSE_LIMIT_BYTES // (196 * 196 * 4) + 1
    assert choose_path(196, 196, 512, 512, True, batch=batch) == 'factored'
    assert choose_path(196, 196, 512, 512, True, dense_limit_bytes=196 * 196 * 4 - 1) == 'factored'
    with pytest.raises(ValueError, match=r"path must be one of \('auto', 'dense', 'factored'\), got 'x'"):
        choose_path(4, 4, 2, 2, True, path='x')
    assert PATHS == ('auto', 'dense', 'factored')


@pytest.mark.parametrize('n,expected', [(196, 'dense'), (4096, 'factored')])
def test_snl_affinity_operator_follows_the_model(n, expected):
    gen = torch.Generator().manual_seed(0)
    p, q = torch.randn(1, n, 512, generator=gen), torch.randn(1, n, 512, generator=gen)
    op = Affinity('relu_dot', symmetrize=True, normalize='symmetric')(p, q)
    assert op.path == expected
