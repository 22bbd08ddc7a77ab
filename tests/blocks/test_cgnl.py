"""CGNLBlock: the compact generalized nonlocal block (Yue et al. 2018) for every rank, both kernels and
channel groups: identity init, gradients, float64 agreement with a reference that forms the channel-aware
``cN x cN`` affinity from the math, gradcheck, mixed precision, bad arguments."""
import copy
import math

import pytest
import torch
from mmcv.cnn import build_plugin_layer
from tests.blocks.reference import conv1x1, output_norm, randomise_, randomise_norms_, rel_err

from snl_mm.blocks import CGNLBlock
from snl_mm.registry import ROOT_MODELS

SHAPES = {1: (2, 8, 7), 2: (2, 8, 5, 6), 3: (2, 8, 3, 4, 5)}
RANKS = sorted(SHAPES)
CONFIGS = {
    'dot': dict(kernel='dot'),
    'dot-g2-scale': dict(kernel='dot', groups=2, use_scale=True),
    'gauss': dict(kernel='gaussian', order=3),
    # a large gamma so that the higher Taylor terms weigh in the comparison
    'gauss-g4-o2': dict(kernel='gaussian', groups=4, order=2, gamma=0.05, use_scale=True),
}


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _random_block(seed=0, **kwargs) -> CGNLBlock:
    return randomise_(CGNLBlock(8, **kwargs), seed=seed).double()


def channel_affinity(t: torch.Tensor, p: torch.Tensor, block: CGNLBlock) -> torch.Tensor:
    """``A_kl = s f(t_k, p_l)`` of ``(B, M)`` vectors, as a dense ``(B, M, M)`` matrix.

    ``dot``: ``f(a, b) = a b``; ``gaussian``: ``sum_{n <= order} exp(-2 gamma) (2 gamma)^n / n! a^n b^n``.
    """
    if block.kernel == 'dot':
        m = t[:, :, None] * p[:, None, :]
    else:
        gamma = block.gamma
        m = sum(math.exp(-2 * gamma) * (2 * gamma) ** n / math.factorial(n)
                * t[:, :, None] ** n * p[:, None, :] ** n for n in range(block.order + 1))
    return m / math.sqrt(t.shape[1]) if block.use_scale else m


def _group_slices(block: CGNLBlock):
    c = block.inner_channels // block.groups
    return [slice(i * c, (i + 1) * c) for i in range(block.groups)]


def cgnl_affinities(block: CGNLBlock, xf: torch.Tensor) -> list:
    """One ``(B, cN, cN)`` matrix per group, nodes channel-major (``k = channel * N + position``)."""
    b = xf.shape[0]
    t, p = conv1x1(xf, block.t), conv1x1(xf, block.p)
    return [channel_affinity(t[:, s].reshape(b, -1), p[:, s].reshape(b, -1), block)
            for s in _group_slices(block)]


def grouped_conv1x1(y: torch.Tensor, conv) -> torch.Tensor:
    """A grouped 1x1 convolution of ``(B, in, N)`` as one matrix product per group."""
    groups, out = conv.groups, conv.weight.shape[0]
    w = conv.weight.reshape(out, -1)
    cin, cout = y.shape[1] // groups, out // groups
    z = torch.cat([w[i * cout:(i + 1) * cout] @ y[:, i * cin:(i + 1) * cin] for i in range(groups)], 1)
    return z if conv.bias is None else z + conv.bias[None, :, None]


def cgnl_reference(block: CGNLBlock, x: torch.Tensor, training: bool = False) -> torch.Tensor:
    """``Y = X + act(gn(z(A vec(g))))`` with the dense channel-aware ``A`` of every group."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    g = conv1x1(xf, block.g)
    parts = [(a @ g[:, s].reshape(b, -1, 1)).reshape(b, -1, xf.shape[-1])
             for a, s in zip(cgnl_affinities(block, xf), _group_slices(block))]
    y = grouped_conv1x1(torch.cat(parts, 1), block.z)
    y = output_norm(y, block.gn, training)
    if block.act is not None:
        y = torch.relu(y)
    return (xf + y).reshape(x.shape)


def test_defaults():
    block = CGNLBlock(16)
    assert (block.inner_channels, block.groups, block.kernel, block.use_scale) == (8, 1, 'dot', False)
    assert isinstance(block.gn, torch.nn.GroupNorm) and block.gn.num_groups == 1
    block = CGNLBlock(16, groups=4)
    assert block.gn.num_groups == 4 and block.z.groups == 4
    assert all(conv.bias is None for conv in (block.t, block.p, block.g, block.z))


@pytest.mark.parametrize('config', ['dot-g2-scale', 'gauss-g4-o2'])
@pytest.mark.parametrize('rank', RANKS)
def test_gradients_reach_every_parameter(rank, config):
    block = randomise_norms_(CGNLBlock(8, bias=True, **CONFIGS[config]))
    x = _x(SHAPES[rank], dtype=torch.float32)
    (block(x) * _x(SHAPES[rank], seed=2, dtype=torch.float32)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('config', sorted(CONFIGS))
@pytest.mark.parametrize('rank', RANKS)
def test_matches_reference_float64(rank, config):
    block = _random_block(**CONFIGS[config])
    x = _x(SHAPES[rank])
    y_ref = cgnl_reference(block, x)
    err = rel_err(block(x), y_ref)
    assert err < 1e-10, err
    assert not torch.equal(y_ref, x)


def test_bias_batch_norm_and_act_match_reference():
    block = _random_block(groups=2, kernel='gaussian', bias=True, norm_cfg=dict(type='BN'),
                          act_cfg=dict(type='ReLU'))
    x = _x(SHAPES[2])
    for training in (False, True):
        block.train(training)
        assert rel_err(block(x), cgnl_reference(block, x, training)) < 1e-10


def test_gaussian_terms_matter():
    """Each Taylor term changes the output: order is not ignored."""
    x = _x(SHAPES[2])
    ys = [_random_block(kernel='gaussian', order=order, gamma=0.05)(x) for order in (1, 2, 3)]
    assert rel_err(ys[0], ys[1]) > 1e-6 and rel_err(ys[1], ys[2]) > 1e-8


@pytest.mark.parametrize('config', sorted(CONFIGS))
@pytest.mark.parametrize('rank', RANKS)
def test_affinity_is_the_channel_aware_matrix(rank, config):
    block = _random_block(**CONFIGS[config])
    x = _x(SHAPES[rank])
    a = block.affinity(x)
    nodes = block.inner_channels // block.groups * x[0, 0].numel()
    assert a.shape == (x.shape[0], block.groups, nodes, nodes)
    a_ref = torch.stack(cgnl_affinities(block, x.reshape(*x.shape[:2], -1)), 1)
    assert rel_err(a, a_ref) < 1e-12
    # rank 1 (dot) or order + 1 (Gaussian): never a full cN x cN kernel
    rank_a = torch.linalg.matrix_rank(a).max().item()
    assert rank_a <= (1 if block.kernel == 'dot' else block.order + 1)


def test_affinity_refuses_huge_inputs():
    with pytest.raises(ValueError, match=r'CGNLBlock.affinity would form'):
        CGNLBlock(64).affinity(torch.zeros(1, 64, 64, 64))


def test_checkpoint_keys_are_the_reference_implementation_s():
    keys = set(CGNLBlock(8, groups=2).state_dict())
    assert keys == {'t.weight', 'p.weight', 'g.weight', 'z.weight', 'gn.weight', 'gn.bias'}
    # a state dict laid out as the reference SpatialCGNL (Conv2d without bias, GroupNorm) loads strictly
    c, cs, groups = 8, 4, 2
    gen = torch.Generator().manual_seed(0)
    state = {'t.weight': torch.randn(cs, c, 1, 1, generator=gen),
             'p.weight': torch.randn(cs, c, 1, 1, generator=gen),
             'g.weight': torch.randn(cs, c, 1, 1, generator=gen),
             'z.weight': torch.randn(c, cs // groups, 1, 1, generator=gen),
             'gn.weight': torch.randn(c, generator=gen), 'gn.bias': torch.randn(c, generator=gen)}
    block = CGNLBlock(c, groups=groups)
    block.load_state_dict(state, strict=True)
    x = _x(SHAPES[2])
    assert rel_err(block.double()(x), cgnl_reference(block, x)) < 1e-10


@pytest.mark.parametrize('kernel', ['dot', 'gaussian'])
@pytest.mark.parametrize('rank', RANKS)
def test_gradcheck(rank, kernel):
    block = CGNLBlock(4, groups=2, kernel=kernel, order=2, gamma=0.05, use_scale=True)
    block = randomise_(block, std=0.7, seed=5).double()
    shape = {1: (1, 4, 3), 2: (1, 4, 2, 2), 3: (1, 4, 2, 1, 2)}[rank]
    x = _x(shape, seed=6).requires_grad_()
    params = {n: p.detach().clone().requires_grad_() for n, p in block.named_parameters()}
    names = list(params)

    def f(x, *ps):
        return torch.func.functional_call(block, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params.values()))


@pytest.mark.parametrize('kernel', ['dot', 'gaussian'])
def test_kernel_sums_run_in_float32_under_autocast(kernel):
    torch.manual_seed(0)
    block = randomise_norms_(CGNLBlock(8, groups=2, kernel=kernel, gamma=0.05))
    x = _x(SHAPES[2], dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        op = block.graph_operator(x)
        y = block(x)
    assert op.p.dtype == op.q.dtype == torch.float32
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    # only the bf16 rounding of the 1x1 convolutions remains (the cubic Taylor terms amplify it)
    assert rel_err(y, block(x)) < 5e-2


@pytest.mark.parametrize('config', sorted(CONFIGS))
@pytest.mark.parametrize('shape', [(2, 8, 1), (2, 8, 1, 1), (2, 8, 1, 1, 1)])
def test_single_position(shape, config):
    block = randomise_(CGNLBlock(8, **CONFIGS[config]))
    x = _x(shape, dtype=torch.float32)
    for autocast in (False, True):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            y = block(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_registry_and_plugin_build():
    block = ROOT_MODELS.build(dict(type='CGNLBlock', in_channels=16, groups=8, kernel='gaussian'))
    assert isinstance(block, CGNLBlock) and block.groups == 8
    name, layer = build_plugin_layer(dict(type='CGNLBlock', groups=2), in_channels=16)
    assert name == 'cgnl_block' and isinstance(layer, CGNLBlock) and layer.z.groups == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"kernel must be one of \('dot', 'gaussian'\), got 'rbf'"):
        CGNLBlock(8, kernel='rbf')
    with pytest.raises(ValueError, match=r'groups must divide in_channels=8 and inner_channels=4; '
                                         r'valid groups: \[1, 2, 4\], got 3'):
        CGNLBlock(8, groups=3)
    with pytest.raises(ValueError, match=r'valid groups: \[1, 2, 4\], got 0'):
        CGNLBlock(8, groups=0)
    with pytest.raises(ValueError, match=r'valid groups'):
        CGNLBlock(8, groups=8)  # divides C = 8 but not Cs = 4
    with pytest.raises(ValueError, match=r'order \(highest Taylor power\) must be an integer >= 1'):
        CGNLBlock(8, kernel='gaussian', order=0)
    with pytest.raises(ValueError, match=r'gamma must be a finite number > 0'):
        CGNLBlock(8, kernel='gaussian', gamma=0.0)
    with pytest.raises(TypeError, match=r'use_scale must be a bool'):
        CGNLBlock(8, use_scale='yes')
    with pytest.raises(ValueError, match=r'in_channels=9 is not divisible by reduction=2.*valid'):
        CGNLBlock(9)


def test_into_norm_range():
    """Ordinary magnitudes pass unchanged; huge ones are divided by a power of two, after which GroupNorm's
    float32 statistics stay finite and give the float64 result."""
    from snl_mm.blocks.cgnl import into_norm_range, uses_input_statistics
    y = _x((2, 8, 6, 1), dtype=torch.float32)
    assert torch.equal(into_norm_range(y), y)
    assert torch.equal(into_norm_range(torch.zeros(3)), torch.zeros(3))
    huge = 1e25 * y
    scaled = into_norm_range(huge)
    ratio = huge / scaled
    assert torch.all(ratio == ratio.flatten()[0]) and float(ratio.flatten()[0]).is_integer()
    assert scaled.abs().max() <= 2.0**60
    gn = torch.nn.GroupNorm(2, 8)
    assert not torch.isfinite(gn(huge)).all()  # the overflow this guards against
    expected = torch.nn.functional.group_norm(huge.double(), 2, eps=gn.eps)
    assert torch.allclose(gn(scaled).double(), expected, atol=1e-5)
    bn = torch.nn.BatchNorm2d(8)
    assert uses_input_statistics(gn) and uses_input_statistics(bn.train())
    assert not uses_input_statistics(bn.eval()) and not uses_input_statistics(None)


def test_gaussian_kernel_on_huge_inputs_matches_float64():
    block = randomise_(CGNLBlock(8, groups=2, kernel='gaussian'), std=0.3, seed=4)
    x = 1e4 * _x(SHAPES[1], seed=2, dtype=torch.float32)
    y = block(x)
    assert torch.isfinite(y).all()
    expected = copy.deepcopy(block).double()(x.double())
    # the block adds O(1) to inputs of 1e4, where float32's spacing is 1e-3: the bound is that rounding
    assert rel_err(y.double() - x.double(), expected - x.double()) < 5e-3
