"""GraphNonlocalBlock: a new block from a config (affinity + Chebyshev filter), against its reference."""
import pytest
import torch
from tests.blocks.reference import (chebyshev_matrices, conv1x1, ns_reference, randomise_, randomise_norms_,
                                    rel_err, shared_snl_reference, snl_affinity, snl_reference, softmax_rows,
                                    tokens)

from snl_mm.blocks import GraphNonlocalBlock, NSBlock, SNLBlock

SHAPES = {1: (2, 8, 7), 2: (2, 8, 5, 6), 3: (2, 8, 3, 4, 5)}
RANKS = sorted(SHAPES)
# SNL's symmetric normalisation with NS's shared weight: Y = X + norm((A Z - Z) W)
SHARED_SNL = dict(affinity=dict(kernel='relu_dot', symmetrize=True, normalize='symmetric'),
                  graph_filter=dict(order=2, terms=(0, 1), shared_coefficients=(-1, 1)))


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize('rank', RANKS)
def test_gradients_reach_every_parameter(rank):
    block = randomise_norms_(GraphNonlocalBlock(8, num_units=2, **SHARED_SNL)).eval()
    x = _x(SHAPES[rank], dtype=torch.float32)
    (block(x) * _x(SHAPES[rank], seed=2, dtype=torch.float32)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('path', ['auto', 'dense', 'factored'])
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('rank', RANKS)
def test_config_block_matches_reference_float64(rank, training, path):
    cfg = dict(SHARED_SNL, affinity=dict(SHARED_SNL['affinity'], path=path))
    block = randomise_(GraphNonlocalBlock(8, **cfg)).double().train(training)
    assert [n for n, _ in block.named_children() if n.startswith('w')] == ['w']
    x = _x(SHAPES[rank])
    err = rel_err(block(x), shared_snl_reference(block, x, training=training))
    assert err < 1e-10, err


def test_defaults_are_snl_without_act():
    block = randomise_(GraphNonlocalBlock(8)).double().eval()
    assert block.act is None
    x = _x(SHAPES[2])
    assert rel_err(block(x), snl_reference(block, x)) < 1e-10


def test_snl_and_ns_blocks_are_configs_of_the_graph_block():
    x = _x(SHAPES[2])
    snl = randomise_(SNLBlock(8, order=3)).double().eval()
    graph = GraphNonlocalBlock(8, graph_filter=dict(order=3)).double().eval()
    graph.load_state_dict(snl.state_dict(), strict=True)
    assert torch.equal(graph(x), snl(x))
    ns = randomise_(NSBlock(8)).double().eval()
    graph = GraphNonlocalBlock(
        8, bias=True, affinity=dict(kernel='exp_dot', normalize='random_walk'),
        graph_filter=dict(order=2, terms=(0, 1), shared_coefficients=(-1, 1))).double().eval()
    graph.load_state_dict(ns.state_dict(), strict=True)
    assert rel_err(graph(x), ns(x)) < 1e-12
    assert rel_err(graph(x), ns_reference(ns, x)) < 1e-10


def test_symmetric_exponential_kernel_config():
    # a point of the space no named block takes: exp kernel, symmetrised, D^-1/2 M D^-1/2, terms T_0 and T_2
    block = randomise_(GraphNonlocalBlock(
        8, affinity=dict(kernel='exp_dot', symmetrize=True, normalize='symmetric', scale='inv_sqrt'),
        graph_filter=dict(order=3, terms=(0, 2)))).double().eval()
    assert [n for n, _ in block.named_children() if n.startswith('w')] == ['w1', 'w3']
    x = _x(SHAPES[1])
    xf = x.reshape(2, 8, -1)
    m = torch.exp(tokens(conv1x1(xf, block.theta)) @ conv1x1(xf, block.phi) / 2)  # Cs = 4
    m = (m + m.transpose(1, 2)) / 2
    d = m.sum(-1)
    a = m / torch.sqrt(d[:, :, None] * d[:, None, :])
    assert rel_err(block.affinity(x), a) < 1e-12
    t = chebyshev_matrices(a, 3)
    z = tokens(conv1x1(xf, block.g))
    y = conv1x1(tokens(z), block.w1) + conv1x1(tokens(t[2] @ z), block.w3)
    y = torch.nn.functional.batch_norm(y, block.norm.running_mean, block.norm.running_var,
                                       block.norm.weight, block.norm.bias, eps=block.norm.eps)
    assert rel_err(block(x), (xf + y).reshape(x.shape)) < 1e-10


def test_affinity_method_returns_the_configured_graph():
    block = randomise_(GraphNonlocalBlock(8, **SHARED_SNL)).double()
    x = _x(SHAPES[3])
    xf = x.reshape(2, 8, -1)
    a = block.affinity(x)
    assert a.shape == (2, 60, 60)
    assert rel_err(a, snl_affinity(conv1x1(xf, block.theta), conv1x1(xf, block.phi))) < 1e-12
    rw = randomise_(GraphNonlocalBlock(8, affinity=dict(kernel='exp_dot', normalize='random_walk'))).double()
    a_rw = softmax_rows(tokens(conv1x1(xf, rw.theta)) @ conv1x1(xf, rw.phi))
    assert rel_err(rw.affinity(x), a_rw) < 1e-12


def test_units_checkpoint_keys():
    keys = set(GraphNonlocalBlock(8, num_units=2, **SHARED_SNL).state_dict())
    norm = {'norm.weight', 'norm.bias', 'norm.running_mean', 'norm.running_var', 'norm.num_batches_tracked'}
    unit = {'g.weight', 'w.weight'} | norm
    assert keys == {'theta.weight', 'phi.weight'} | unit | {f'units.0.{k}' for k in unit}


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"kernel must be one of \('exp_dot', 'dot', 'relu_dot', 'softmax'\), "
                                         r"got 'cosine'"):
        GraphNonlocalBlock(8, affinity=dict(kernel='cosine'))
    with pytest.raises(ValueError, match=r"normalize must be one of \('none', 'size', 'random_walk', "
                                         r"'symmetric'\), got 'l2'"):
        GraphNonlocalBlock(8, affinity=dict(normalize='l2'))
    with pytest.raises(ValueError, match=r"normalize='symmetric' needs a non-negative kernel"):
        GraphNonlocalBlock(8, affinity=dict(kernel='dot', symmetrize=True, normalize='symmetric'))
    with pytest.raises(TypeError, match=r'affinity takes kernel, symmetrize, normalize, scale, path'):
        GraphNonlocalBlock(8, affinity=dict(kernal='relu_dot'))
    with pytest.raises(TypeError, match=r'graph_filter takes order, terms, shared_coefficients'):
        GraphNonlocalBlock(8, graph_filter=dict(orders=2))
    with pytest.raises(TypeError, match=r'affinity must be a dict'):
        GraphNonlocalBlock(8, affinity='relu_dot')
    with pytest.raises(ValueError, match=r'order must be an integer >= 1'):
        GraphNonlocalBlock(8, graph_filter=dict(order=0))
    with pytest.raises(ValueError, match=r'terms must be distinct indices in range\(order=2\)'):
        GraphNonlocalBlock(8, graph_filter=dict(order=2, terms=(0, 2)))
    with pytest.raises(ValueError, match=r'num_units must be an integer >= 1'):
        GraphNonlocalBlock(8, num_units=0)
    with pytest.raises(ValueError, match=r'reduction must be a positive integer'):
        GraphNonlocalBlock(8, reduction=0)
    with pytest.raises(ValueError, match=r'len\(S\) in \(1, 2, 3\)'):
        GraphNonlocalBlock(8)(torch.zeros(1, 8, 2, 2, 2, 2))


@pytest.mark.parametrize('affinity', [dict(kernel='exp_dot', symmetrize=True, normalize='symmetric'),
                                      dict(kernel='exp_dot', normalize='random_walk', path='dense')],
                         ids=['exp-symmetric', 'exp-random_walk-dense'])
def test_exponential_kernels_on_large_inputs_float32(affinity):
    # logits spread over hundreds: the normalised affinity must not underflow to zero rows (or NaN)
    block = randomise_(GraphNonlocalBlock(8, affinity=affinity, graph_filter=dict(order=2))).eval()
    x = 20 * _x(SHAPES[2], seed=7, dtype=torch.float32)
    xd = x.double().reshape(2, 8, -1)
    ref_block = GraphNonlocalBlock(8, affinity=affinity, graph_filter=dict(order=2)).double().eval()
    ref_block.load_state_dict(block.state_dict())
    log_m = tokens(conv1x1(xd, ref_block.theta)) @ conv1x1(xd, ref_block.phi)
    assert (log_m.amax(dim=(1, 2))[:, None] - log_m.amax(-1)).max() > 200
    if affinity.get('symmetrize'):
        log_m = torch.logaddexp(log_m, log_m.transpose(1, 2)) - torch.log(torch.tensor(2.0, dtype=log_m.dtype))
        log_d = torch.logsumexp(log_m, -1, keepdim=True)
        a = torch.exp(log_m - log_d / 2 - log_d.transpose(1, 2) / 2)
    else:
        a = torch.softmax(log_m, -1)
    z = tokens(conv1x1(xd, ref_block.g))
    y = conv1x1(tokens(z), ref_block.w1) + conv1x1(tokens(a @ z), ref_block.w2)
    y = torch.nn.functional.batch_norm(y, ref_block.norm.running_mean, ref_block.norm.running_var,
                                       ref_block.norm.weight, ref_block.norm.bias, eps=ref_block.norm.eps)
    out = block(x)
    assert torch.isfinite(out).all()
    err = rel_err(out.double() - xd.reshape(x.shape), y.reshape(x.shape))
    assert err < 1e-4, err
