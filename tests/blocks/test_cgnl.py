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


def test_rescale_scope():
    """Where a power of two before ``z`` is undone by the norm: per sample for per-sample statistics, per batch for
    BN on this batch's statistics, nowhere for running statistics, SyncBN, no norm or a ``z`` with a bias."""
    from snl_mm.blocks.cgnl import rescale_scope
    gn, bn = torch.nn.GroupNorm(2, 8), torch.nn.BatchNorm2d(8)
    assert rescale_scope(gn, bias=False) == 'sample'
    assert rescale_scope(torch.nn.LayerNorm(8), bias=False) == 'sample'
    assert rescale_scope(torch.nn.InstanceNorm2d(8), bias=False) == 'sample'
    assert rescale_scope(bn.train(), bias=False) == 'batch'
    assert rescale_scope(bn.eval(), bias=False) is None
    assert rescale_scope(torch.nn.SyncBatchNorm(8).train(), bias=False) is None
    assert rescale_scope(None, bias=False) is None
    assert rescale_scope(gn, bias=True) is None


def test_range_exponent_per_sample_and_dtype():
    """Ordinary magnitudes keep k = 0; a huge sample gets the k that brings ``max |y| ||W||_inf`` to the range of
    the dtype ``z`` runs in, the others keep theirs; a NaN sample gets 0."""
    from snl_mm.blocks.cgnl import RANGE_EXPONENTS, range_exponent
    weight = torch.full((8, 4, 1, 1), 0.5)  # ||W||_inf = 2
    y = _x((3, 4, 6, 1), dtype=torch.float32)
    assert torch.equal(range_exponent(y, weight, True), torch.zeros(3, 1, 1, 1))
    y[1] *= 1e30
    y[2, 0, 0, 0] = float('nan')
    k = range_exponent(y, weight, True).flatten()
    assert k[0] == 0 and k[2] == 0 and k[1] > 0
    top = y[1].abs().max() * 2
    assert top / 2 ** k[1] <= 2.0**RANGE_EXPONENTS[torch.float32] < top / 2 ** (k[1] - 1)
    assert range_exponent(y[1:2], weight, False) == k[1]  # the batch scope: one exponent
    with torch.autocast('cpu', dtype=torch.float16):
        k16 = range_exponent(1e5 * y[:1], weight, True).flatten()
    # 1e5 * |y| * 2 needs k with (...) / 2^k <= 2^15; float32 needs none
    assert range_exponent(1e5 * y[:1], weight, True).flatten() == 0
    top16 = 1e5 * y[0].abs().max() * 2
    assert k16 > 0 and top16 / 2 ** k16 <= 2.0**15 < top16 / 2 ** (k16 - 1)


def _issue_block(kernel, seed=0, **kwargs) -> CGNLBlock:
    """The fault report's setting: C = 256, weights at 1 / sqrt(fan_in), a random output norm."""
    block = CGNLBlock(256, kernel=kernel, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in (block.t, block.p, block.g, block.z):
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / math.sqrt(fan_in))
            if conv.bias is not None:
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) / math.sqrt(fan_in))
    return randomise_norms_(block, seed=seed).eval()


@pytest.mark.parametrize('setting', ['gn', 'gn-bias', 'bn-eval'])
@pytest.mark.parametrize('kernel', ['dot', 'gaussian'])
def test_half_precision_at_ordinary_activations(kernel, setting):
    """The fault report's case, (2, 256, 28, 28) and ``relu(randn) * 4``: the kernel sums reach ~1e5; under
    float16 autocast (and bfloat16) the block's output is finite and close to the float32 one, with the norm that
    undoes the rescaling (GN) and without it (GN after a ``z`` with bias, BN with running statistics)."""
    kwargs = dict(gn=dict(), **{'gn-bias': dict(bias=True), 'bn-eval': dict(norm_cfg=dict(type='BN'))})
    block = _issue_block(kernel, **kwargs[setting])
    # random biases decorrelate p and g, and the Gaussian kernel's leading term is linear (sum_l g_l): larger
    # activations reach the same range
    scale = 64 if kernel == 'gaussian' else 8 if setting == 'gn-bias' else 4
    x = torch.relu(_x((2, 256, 28, 28), seed=3, dtype=torch.float32)) * scale
    with torch.no_grad():
        y32 = block(x)
        signal = block.graph_operator(x).matmul(block.node_features(block, x))
        unscaled = block.z(signal.reshape(2, block.inner_channels, -1, 1))
        assert unscaled.abs().max() > 65504  # the float16 range z's output would leave
        assert torch.isfinite(y32).all()
        for dtype, bound in ((torch.float16, 5e-3), (torch.bfloat16, 2e-2)):
            with torch.autocast('cpu', dtype=dtype):
                y = block(x)
            assert torch.isfinite(y).all(), dtype
            assert rel_err(y.float() - x, y32 - x) < bound, dtype


@pytest.mark.parametrize('norm_cfg', [dict(type='GN'), dict(type='BN')], ids=['gn', 'bn-eval'])
@pytest.mark.parametrize('kernel', ['dot', 'gaussian'])
def test_float16_module_on_constant_input(kernel, norm_cfg):
    """A block converted to float16 (no autocast) on a constant input, which the fault report saw fail too."""
    block = _issue_block(kernel, norm_cfg=norm_cfg).half()
    x = torch.full((2, 256, 7, 7), 3.0, dtype=torch.float16)
    y = block(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()


@pytest.mark.parametrize('norm_cfg', [dict(type='GN'), dict(type='BN')], ids=['gn', 'bn-eval'])
def test_rescaling_is_exact_on_huge_inputs(norm_cfg):
    """Inputs of 1e4: the Gaussian kernel's output passes 2^62 after ``z``; the rescaled block agrees with
    float64 (where nothing is rescaled) whether the norm undoes the power of two (GN) or it is multiplied back
    (BN with running statistics)."""
    block = randomise_(CGNLBlock(8, groups=2, kernel='gaussian', norm_cfg=norm_cfg), std=0.3, seed=4).eval()
    x = 1e4 * _x(SHAPES[2], seed=2, dtype=torch.float32)
    y = block(x)
    assert torch.isfinite(y).all()
    expected = copy.deepcopy(block).double()(x.double())
    assert rel_err(y.double() - x.double(), expected - x.double()) < 5e-3


def test_gaussian_kernel_on_huge_inputs_matches_float64():
    block = randomise_(CGNLBlock(8, groups=2, kernel='gaussian'), std=0.3, seed=4)
    x = 1e4 * _x(SHAPES[1], seed=2, dtype=torch.float32)
    y = block(x)
    assert torch.isfinite(y).all()
    expected = copy.deepcopy(block).double()(x.double())
    # the block adds O(1) to inputs of 1e4, where float32's spacing is 1e-3: the bound is that rounding
    assert rel_err(y.double() - x.double(), expected - x.double()) < 5e-3
