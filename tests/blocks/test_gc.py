"""GCBlock: mmcv's ContextBlock (its state dict, strictly; the same numbers), a float64 reference from GCNet's
formula on every rank, SE as a config against an independent SE reference, the outputs at init, gradients and
errors."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ContextBlock, build_plugin_layer
from mmengine.config import Config

from snl_mm.blocks import GCBlock
from snl_mm.registry import ROOT_MODELS
from tests.blocks.reference import conv1x1
from tests.helpers import randomise_, rel_err

BLOCKS_CFG = Path(__file__).resolve().parents[2] / 'configs' / '_base_' / 'blocks.py'
SHAPES = {1: (2, 16, 7), 2: (2, 16, 5, 6), 3: (2, 16, 3, 4, 5)}
POOLINGS = ['att', 'avg']
FUSIONS = [('channel_add', ), ('channel_mul', ), ('channel_add', 'channel_mul')]
FUSION_IDS = ['add', 'mul', 'add+mul']


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _transform(seq, v):
    """``conv, LayerNorm over the bottleneck channels (or none), ReLU, conv`` on context vectors ``(B, C)``."""
    h = conv1x1(v[:, :, None], seq[0])[:, :, 0]
    if isinstance(seq[1], torch.nn.LayerNorm):
        h = (h - h.mean(1, keepdim=True)) / torch.sqrt(h.var(1, unbiased=False, keepdim=True) + seq[1].eps)
        h = h * seq[1].weight.flatten() + seq[1].bias.flatten()
    return conv1x1(torch.relu(h)[:, :, None], seq[3])[:, :, 0]


def gc_reference(block: GCBlock, x):
    """GCNet (Cao et al. 2019, Eq. 3): ``c = sum_j softmax_j(w_k x_j) x_j`` (or the mean), then
    ``x * sigmoid(T_mul(c))`` and ``+ T_add(c)``."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    if block.pooling_type == 'att':
        logits = conv1x1(xf, block.conv_mask)[:, 0]
        e = torch.exp(logits - logits.amax(1, keepdim=True))
        s = e / e.sum(1, keepdim=True)
    else:
        s = torch.full(xf.shape[::2], 1.0 / xf.shape[2], dtype=x.dtype)
    context = (xf * s[:, None, :]).sum(-1)
    out = xf
    if 'channel_mul' in block.fusion_types:
        out = out * torch.sigmoid(_transform(block.channel_mul_conv, context))[:, :, None]
    if 'channel_add' in block.fusion_types:
        out = out + _transform(block.channel_add_conv, context)[:, :, None]
    return out.reshape(x.shape)


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('fusion_types', FUSIONS, ids=FUSION_IDS)
@pytest.mark.parametrize('pooling_type', POOLINGS)
def test_matches_mmcv_context_block(pooling_type, fusion_types, training):
    """The state dict of mmcv's ContextBlock loads strictly and both compute the same output and gradients."""
    ref = randomise_(ContextBlock(16, 1 / 4, pooling_type, fusion_types), std=0.3).train(training)
    block = GCBlock(16, 1 / 4, pooling_type=pooling_type, fusion_types=fusion_types).train(training)
    assert set(block.state_dict()) == set(ref.state_dict())
    block.load_state_dict(ref.state_dict(), strict=True)
    x = _x(SHAPES[2], dtype=torch.float32).requires_grad_()
    y = block(x)
    y_ref = ref(x.detach().clone())
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(y - x, y_ref - x) < 1e-5  # the block's contribution, not only the residual
    w = _x(SHAPES[2], seed=2, dtype=torch.float32)
    grad, = torch.autograd.grad((y * w).sum(), x)
    x_ref = x.detach().clone().requires_grad_()
    grad_ref, = torch.autograd.grad((ref(x_ref) * w).sum(), x_ref)
    assert rel_err(grad, grad_ref) < 1e-5


@pytest.mark.parametrize('rank', sorted(SHAPES))
@pytest.mark.parametrize('fusion_types', FUSIONS, ids=FUSION_IDS)
@pytest.mark.parametrize('pooling_type', POOLINGS)
def test_matches_the_formula_float64(pooling_type, fusion_types, rank):
    block = randomise_(GCBlock(16, pooling_type=pooling_type, fusion_types=fusion_types)).double()
    x = _x(SHAPES[rank])
    assert rel_err(block(x), gc_reference(block, x)) < 1e-10


def test_affinity_is_rank_one_with_the_attention_weights():
    block = randomise_(GCBlock(16)).double()
    x = _x(SHAPES[2])
    a = block.affinity(x)
    logits = conv1x1(x.reshape(2, 16, -1), block.conv_mask)[:, 0]
    s = torch.softmax(logits, -1)
    assert a.shape == (2, 30, 30)
    assert rel_err(a, s[:, None, :].expand(2, 30, 30)) < 1e-14
    assert block.spectral_form() == dict(vertices='N', edges='N x N', affinity='1 s^T', node_feature='X',
                                         filter='A Z W')


def test_outputs_at_init_are_mmcvs():
    """``channel_add`` starts as the identity; ``channel_mul`` is mmcv's gate, ``X * sigmoid(0) = X / 2``, exactly
    as a freshly built ContextBlock (kept: its checkpoints and numbers are mmcv's)."""
    x = _x(SHAPES[2], dtype=torch.float32)
    for fusion_types, expected in ((('channel_add', ), x), (('channel_mul', ), x / 2),
                                   (('channel_add', 'channel_mul'), x / 2)):
        block = GCBlock(16, fusion_types=fusion_types)
        assert torch.equal(block(x), expected), fusion_types
        assert torch.equal(ContextBlock(16, 1 / 4, fusion_types=fusion_types)(x), expected)
        randomise_(block)
        assert not torch.equal(block(x), expected)
        block.init_weights()
        assert torch.equal(block(x), expected)


def se_reference(x, fc1_w, fc1_b, fc2_w, fc2_b):
    """Squeeze-and-excitation (Hu et al. 2018): ``x * sigmoid(W_2 relu(W_1 mean(x) + b_1) + b_2)`` per channel."""
    squeezed = x.flatten(2).mean(-1)
    excited = torch.sigmoid(F.linear(torch.relu(F.linear(squeezed, fc1_w, fc1_b)), fc2_w, fc2_b))
    return x * excited.reshape(*excited.shape, *[1] * (x.dim() - 2))


@pytest.mark.parametrize('rank', sorted(SHAPES))
def test_se_config_is_the_se_block(rank):
    """``nonlocal_blocks.se`` of ``configs/_base_/blocks.py``: average pooling, ``channel_mul``, no LayerNorm."""
    cfg = Config.fromfile(str(BLOCKS_CFG)).nonlocal_blocks.se
    block = randomise_(ROOT_MODELS.build(dict(cfg, in_channels=32)), std=0.3).double()
    assert isinstance(block, GCBlock) and not hasattr(block, 'conv_mask') and block.channel_add_conv is None
    assert block.inner_channels == 2  # reduction 16
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in block.modules())
    assert block.spectral_form()['affinity'] == '1 1^T / N'
    fc1, fc2 = block.channel_mul_conv[0], block.channel_mul_conv[3]
    x = _x((2, 32, *SHAPES[rank][2:]))
    ref = se_reference(x, fc1.weight.flatten(1), fc1.bias, fc2.weight.flatten(1), fc2.bias)
    assert rel_err(block(x), ref) < 1e-12


def test_gc_config_and_plugin_name():
    """``nonlocal_blocks.gc`` is GCNet's backbone block (ratio 1/16, attention pooling, channel_add); as a plugin
    it takes mmcv's name, so that the keys of an mmdetection GCNet backbone are its own."""
    cfg = Config.fromfile(str(BLOCKS_CFG)).nonlocal_blocks.gc
    name, layer = build_plugin_layer(dict(cfg), in_channels=256)
    ref_name, ref = build_plugin_layer(dict(type='ContextBlock', ratio=1. / 16), in_channels=256)
    assert isinstance(layer, GCBlock) and name == ref_name == 'context_block'
    layer.load_state_dict(ref.state_dict(), strict=True)


def test_group_norm_and_no_activation():
    block = randomise_(GCBlock(16, norm_cfg=dict(type='GN', num_groups=2), act_cfg=None)).double().eval()
    assert isinstance(block.channel_add_conv[1], torch.nn.GroupNorm)
    assert isinstance(block.channel_add_conv[2], torch.nn.Identity)
    x = _x(SHAPES[2])
    xf = x.reshape(2, 16, -1)
    s = torch.softmax(conv1x1(xf, block.conv_mask)[:, 0], -1)
    h = conv1x1((xf * s[:, None]).sum(-1)[:, :, None], block.channel_add_conv[0])
    h = F.group_norm(h, 2, block.channel_add_conv[1].weight, block.channel_add_conv[1].bias, eps=1e-5)
    expected = xf + conv1x1(h, block.channel_add_conv[3])
    assert rel_err(block(x), expected.reshape(x.shape)) < 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"pooling_type must be one of \('att', 'avg'\), got 'max'"):
        GCBlock(16, pooling_type='max')
    with pytest.raises(ValueError, match=r"fusion_types must be a non-empty tuple of distinct entries of "
                                         r"\('channel_add', 'channel_mul'\), got \('channel_sum',\)"):
        GCBlock(16, fusion_types=('channel_sum', ))
    with pytest.raises(ValueError, match='fusion_types must be a non-empty tuple'):
        GCBlock(16, fusion_types='channel_add')
    with pytest.raises(ValueError, match='fusion_types must be a non-empty tuple'):
        GCBlock(16, fusion_types=())
    with pytest.raises(ValueError, match=r'ratio=0.01 gives int\(in_channels \* ratio\) = 0 bottleneck channels'):
        GCBlock(16, ratio=0.01)
    with pytest.raises(ValueError, match='ratio must be a number > 0'):
        GCBlock(16, ratio=-1)
    with pytest.raises(ValueError, match=r"norm_cfg .* must be None or of a type in \('LN', 'GN'\)"):
        GCBlock(16, norm_cfg=dict(type='BN'))
    with pytest.raises(ValueError, match=r"an LN norm_cfg takes type and eps, got \['momentum'\]"):
        GCBlock(16, norm_cfg=dict(type='LN', momentum=0.1))
    assert GCBlock(16, inner_channels=3).channel_add_conv[0].out_channels == 3
    with pytest.raises(ValueError, match=r'len\(S\) in \(1, 2, 3\)'):
        GCBlock(16)(torch.zeros(1, 16, 2, 2, 2, 2))


def test_benchmark_reference_is_mmcvs_context_block():
    """``benchmark_blocks.py``'s reference of GC: mmcv's ContextBlock with the block's weights (the same output);
    none for settings ContextBlock does not have."""
    from snl_mm.analysis.benchmark import Case, build_block, reference
    shape = (2, 16, 5, 7)
    block = build_block(Case('GCBlock', shape, dict(fusion_types=('channel_add', 'channel_mul'))))
    ref, why = reference('mmcv', block, shape)
    assert why == '' and type(ref) is ContextBlock
    x = _x(shape, dtype=torch.float32)
    assert rel_err(block(x) - x, ref(x) - x) < 1e-5
    assert reference('mmcv', build_block(Case('GCBlock', shape, dict(norm_cfg=None))), shape)[0] is None
    assert reference('mmcv', build_block(Case('GCBlock', (2, 16, 5))), (2, 16, 5))[1] == 'the upstream module is 2D'


def test_pooling_affinity_under_a_chebyshev_filter():
    """``GraphNonlocalBlock(affinity=dict(type='pooling'), graph_filter=dict(order=3))``: GC's rank-one graph (its
    logits projected from the keys, ``channels`` filled in by the block) with ``Z W_1 + A Z W_2 + T_2(A) Z W_3``;
    ``A^2 = A`` makes ``T_2(A) = 2 A - I``. Against the dense float64 filter."""
    from snl_mm.blocks import GraphNonlocalBlock
    from tests.blocks.reference import chebyshev_matrices, output_norm, tokens
    block = GraphNonlocalBlock(16, affinity=dict(type='pooling'), graph_filter=dict(order=3))
    block = randomise_(block, std=0.3).double().eval()
    x = _x(SHAPES[2])
    xf = x.reshape(2, 16, -1)
    mask = block.graph.mask
    s = torch.softmax(tokens(conv1x1(xf, block.phi)) @ mask.weight.T + mask.bias, dim=1)  # (B, N, 1)
    a = s.transpose(1, 2).expand(2, 30, 30)
    assert rel_err(block.affinity(x), a) < 1e-14
    z = tokens(conv1x1(xf, block.g))
    y = sum(conv1x1(tokens(t @ z), getattr(block, f'w{i + 1}')) for i, t in enumerate(chebyshev_matrices(a, 3)))
    assert rel_err(block(x), (xf + output_norm(y, block.norm, False)).reshape(x.shape)) < 1e-10


def test_flop_count():
    """``get_flops.py``'s counter sees every product of the block: the logits ``C N`` and the context ``C N`` per
    sample, and each transform's two convolutions once per sample (not per position)."""
    from snl_mm.analysis.flops import analyze
    block = GCBlock(16, fusion_types=('channel_add', 'channel_mul')).eval()
    (cost, ) = analyze(torch.nn.Sequential(block), (torch.randn(2, 16, 5, 6), )).blocks
    b, c, cs, n = 2, 16, 4, 30
    assert cost.by_operator['bmm'] == b * c * n + b * c * n  # the logits, then the context
    assert cost.by_operator['conv'] == 2 * b * 2 * c * cs
