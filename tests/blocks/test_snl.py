"""SNLBlock: Eq. 5 of the paper (and gSNL's Chebyshev series), its affinity's spectrum, both orders of
products, identity init, gradients, float64 agreement with a reference written from the math."""
import pytest
import torch
from tests.blocks.reference import (chebyshev_matrices, conv1x1, randomise_, randomise_norms_, rel_err,
                                    snl_affinity, snl_reference, tokens)

from snl_mm.blocks import SNLBlock
from snl_mm.graph.cost import choose_path

SHAPES = {1: (2, 8, 7), 2: (2, 8, 5, 6), 3: (2, 8, 3, 4, 5)}
RANKS = sorted(SHAPES)


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _random_block(seed=0, **kwargs) -> SNLBlock:
    return randomise_(SNLBlock(8, **kwargs), seed=seed).double()


@pytest.mark.parametrize('rank', RANKS)
def test_gradients_reach_every_parameter(rank):
    block = randomise_norms_(SNLBlock(8, order=3, num_units=2)).eval()
    x = _x(SHAPES[rank], dtype=torch.float32)
    (block(x) * _x(SHAPES[rank], seed=2, dtype=torch.float32)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('rank', RANKS)
def test_matches_reference_float64(rank, training):
    block = _random_block().train(training)
    x = _x(SHAPES[rank])
    y_ref = snl_reference(block, x, training=training)
    err = rel_err(block(x), y_ref)
    assert err < 1e-10, err
    assert not torch.equal(y_ref, x)


def test_group_norm_and_no_act_match_reference():
    block = _random_block(norm_cfg=dict(type='GN', num_groups=2), act_cfg=None)
    x = _x(SHAPES[3])
    assert rel_err(block(x), snl_reference(block, x)) < 1e-10


def test_checkpoint_keys():
    keys = set(SNLBlock(8, order=3).state_dict())
    assert keys == {
        'theta.weight', 'phi.weight', 'g.weight', 'w1.weight', 'w2.weight', 'w3.weight', 'norm.weight',
        'norm.bias', 'norm.running_mean', 'norm.running_var', 'norm.num_batches_tracked'
    }


@pytest.mark.parametrize('rank', RANKS)
def test_affinity_is_the_dense_eq5_matrix(rank):
    block = _random_block()
    x = _x(SHAPES[rank])
    xf = x.reshape(x.shape[0], x.shape[1], -1)
    a_ref = snl_affinity(conv1x1(xf, block.theta), conv1x1(xf, block.phi))
    a = block.affinity(x)
    n = xf.shape[-1]
    assert a.shape == (x.shape[0], n, n)
    assert rel_err(a, a_ref) < 1e-12


def _spectral_checks(a: torch.Tensor, degree: torch.Tensor) -> None:
    """Symmetric, non-negative, eigenvalues in [-1, 1], ``A sqrt(d) = sqrt(d)``."""
    assert torch.allclose(a, a.transpose(1, 2), rtol=0, atol=1e-14)
    assert (a >= 0).all()
    eig = torch.linalg.eigvalsh(a)
    assert eig.min() >= -1 - 1e-12 and eig.max() <= 1 + 1e-12, (eig.min(), eig.max())
    s = degree.sqrt().unsqueeze(-1)
    assert torch.allclose(a @ s, s, rtol=1e-12, atol=1e-14)
    # 1 is the top eigenvalue for every sample with some positive degree
    assert torch.allclose(eig[:, -1], torch.ones_like(eig[:, -1]), atol=1e-12)


def _degrees(block: SNLBlock, x: torch.Tensor) -> torch.Tensor:
    xf = x.reshape(x.shape[0], x.shape[1], -1)
    p = tokens(torch.relu(conv1x1(xf, block.theta)))
    q = tokens(torch.relu(conv1x1(xf, block.phi)))
    m = p @ q.transpose(1, 2)
    return ((m + m.transpose(1, 2)) / 2).sum(-1)


@pytest.mark.parametrize('path', ['dense', 'factored'])
@pytest.mark.parametrize('rank', RANKS)
def test_affinity_spectrum(rank, path):
    block = _random_block(path=path)
    x = _x(SHAPES[rank])
    a = block.affinity(x)
    d = _degrees(block, x)
    assert (d > 0).all()
    _spectral_checks(a, d)


def test_zero_degree_position_gives_zero_row_not_nan():
    # no biases: an all-zero input column gives theta = phi = 0 there, hence a zero degree
    block = _random_block(path='factored').eval()
    x = _x(SHAPES[2])
    x[:, :, 2, 3] = 0
    i = 2 * 6 + 3
    d = _degrees(block, x)
    assert (d[:, i] == 0).all() and (d.count_nonzero(dim=1) == d.shape[1] - 1).all()
    a = block.affinity(x)
    assert not a.isnan().any()
    assert (a[:, i] == 0).all() and (a[:, :, i] == 0).all()
    _spectral_checks(a, d)
    for path in ('dense', 'factored'):
        block.graph.path = path
        xg = x.clone().requires_grad_()
        y = block(xg)
        assert torch.isfinite(y).all()
        assert rel_err(y, snl_reference(block, x)) < 1e-10
        y.sum().backward()
        assert torch.isfinite(xg.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in block.parameters())
        block.zero_grad()


# Cs = 8: the cost model switches from the dense to the factored order near N = 2 Cs = 16.
SWITCH_SIZES = [(3, 3), (4, 4), (5, 5), (6, 6), (8, 8)]


def test_switch_sizes_straddle_the_cost_model():
    paths = [choose_path(h * w, h * w, 8, 8, True) for h, w in SWITCH_SIZES]
    assert paths[0] == 'dense' and paths[-1] == 'factored'


@pytest.mark.parametrize('size', SWITCH_SIZES, ids=lambda s: f'N{s[0] * s[1]}')
def test_dense_and_factored_paths_agree(size):
    blocks = {path: randomise_(SNLBlock(16, path=path), seed=3).double().eval()
              for path in ('auto', 'dense', 'factored')}
    x = _x((2, 16, *size), seed=4)
    n = size[0] * size[1]
    ops = {path: blk.graph_operator(x) for path, blk in blocks.items()}
    assert ops['dense'].path == 'dense' and ops['factored'].path == 'factored'
    assert ops['auto'].path == choose_path(n, n, 8, 8, True, batch=2)
    ys = {path: blk(x) for path, blk in blocks.items()}
    y_ref = snl_reference(blocks['auto'], x)
    err = rel_err(ys['dense'], ys['factored'])
    assert err < 1e-10, err
    for path, y in ys.items():
        assert rel_err(y, y_ref) < 1e-10, path


@pytest.mark.parametrize('path', ['dense', 'factored'])
@pytest.mark.parametrize('order', [3, 4])
def test_order_k_is_the_chebyshev_recurrence(order, path):
    block = _random_block(order=order, path=path).eval()
    assert [f'w{k}' for k in range(1, order + 1)] == [n for n, _ in block.named_children()
                                                      if n.startswith('w')]
    x = _x(SHAPES[2])
    err = rel_err(block(x), snl_reference(block, x, order=order))
    assert err < 1e-10, err
    # the series written out with the matrices T_k of the dense A, against a plain power sum
    xf = x.reshape(2, 8, -1)
    a = block.affinity(x)
    ts = chebyshev_matrices(a, order)
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    assert torch.allclose(ts[2], 2 * a @ a - eye, atol=1e-12)
    if order == 4:
        assert torch.allclose(ts[3], 4 * a @ a @ a - 3 * a, atol=1e-12)
    z = tokens(conv1x1(xf, block.g))
    y = sum(conv1x1(tokens(t @ z), getattr(block, f'w{k + 1}')) for k, t in enumerate(ts))
    y = torch.nn.functional.batch_norm(
        y, block.norm.running_mean, block.norm.running_var, block.norm.weight, block.norm.bias,
        eps=block.norm.eps)
    assert rel_err(block.eval()(x), (xf + y).reshape(x.shape)) < 1e-10


@pytest.mark.parametrize('path', ['dense', 'factored'])
def test_units_share_one_affinity(path):
    block = _random_block(num_units=2, path=path)
    x = _x(SHAPES[3])
    for training in (False, True):
        block.train(training)
        assert rel_err(block(x), snl_reference(block, x, training=training)) < 1e-10


def test_bad_arguments():
    with pytest.raises(ValueError, match=r'order must be an integer >= 2'):
        SNLBlock(8, order=1)
    with pytest.raises(ValueError, match=r'num_units must be an integer >= 1'):
        SNLBlock(8, num_units=0)
    with pytest.raises(ValueError, match=r"path must be one of \('auto', 'dense', 'factored'\)"):
        SNLBlock(8, path='sparse')
    with pytest.raises(ValueError, match=r'in_channels=9 is not divisible by reduction=2.*valid'):
        SNLBlock(9)


def test_default_block_trains_from_the_identity():
    # identity at init must not be a dead end: the zeroed norm weight gets a gradient on the first step,
    # and after one SGD step every parameter does
    torch.manual_seed(0)
    block = SNLBlock(8).train()
    x = torch.randn(2, 8, 5, 6)
    block(x).square().sum().backward()
    assert block.norm.weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in block.parameters():
            p -= 0.1 * p.grad
    block.zero_grad()
    block(x).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_relu_behind_the_zeroed_norm_is_refused():
    # relu'(0) = 0: behind a zero-initialised norm the block would never leave the identity
    with pytest.raises(ValueError, match=r"act_cfg=\{'type': 'ReLU'\} .* zero gradient at init"):
        SNLBlock(8, act_cfg=dict(type='ReLU'))
    SNLBlock(8, act_cfg=dict(type='LeakyReLU'))
