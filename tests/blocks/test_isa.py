"""ISA's block: float64 against a reference written from the formula (dense attention masked to the groups of the
padded map), float32 against mmsegmentation's ``ISAHead`` (between its input convolution and its classifier) with
the same state dict, gradients, errors."""
import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tests.blocks.reference import batch_norm, conv1x1, randomise_, rel_err, tokens

from snl_mm.blocks import ISABlock
from snl_mm.utils.optional import mmseg_available

needs_mmseg = pytest.mark.skipif(not mmseg_available(), reason='mmsegmentation needs a compiled mmcv (mmcv.ops)')


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def conv_module(x, module, training):
    """mmcv's ``ConvModule`` (1x1 conv, BN, ReLU where it has one) on ``(B, C, N)``."""
    y = batch_norm(conv1x1(x, module.conv), module.bn, training)
    return torch.relu(y) if module.with_activation else y


def same_group(padded, factors, grouping):
    """``(N_pad, N_pad)`` boolean: positions of the padded map at the same offset in their cells (``'long'``) or in
    the same cell (``'short'``)."""
    coords = list(itertools.product(*[range(n) for n in padded]))
    key = [tuple(c % f for c, f in zip(p, factors)) if grouping == 'long' else
           tuple(c // f for c, f in zip(p, factors)) for p in coords]
    return torch.tensor([[a == b for b in key] for a in key])


def relation(x, rel, mask, training):
    """``relu(BN(W_o (A (W_v X))))`` on ``(B, C, N_pad)``, ``A`` the softmax of ``Q K^T / sqrt(Cs)`` within groups."""
    q = conv_module(conv_module(x, rel.query_project[0], training), rel.query_project[1], training)
    k = conv_module(conv_module(x, rel.key_project[0], training), rel.key_project[1], training)
    logits = (tokens(q) @ k / q.shape[1]**0.5).masked_fill(~mask, float('-inf'))
    v = conv1x1(x, rel.value_project)
    return conv_module(tokens(torch.softmax(logits, dim=-1) @ tokens(v)), rel.output_project, training)


def reference(block, x, training=False):
    """Pad (``pad // 2`` before), the long-range then the short-range relation, crop, fuse."""
    spatial = x.shape[2:]
    factors = (block.down_factor, ) * len(spatial) if isinstance(block.down_factor, int) else block.down_factor
    pads = [math.ceil(n / f) * f - n for n, f in zip(spatial, factors)]
    padding = [p for pad in reversed(pads) for p in (pad // 2, pad - pad // 2)]
    xp = F.pad(x, padding)
    flat = xp.flatten(2)
    out = relation(flat, block.global_relation, same_group(xp.shape[2:], factors, 'long'), training)
    out = relation(out, block.local_relation, same_group(xp.shape[2:], factors, 'short'), training)
    out = out.reshape(xp.shape)
    for axis, (n, pad) in enumerate(zip(spatial, pads)):
        out = out.narrow(2 + axis, pad // 2, n)
    out = out.flatten(2)
    if block.fusion == 'residual':
        return x + batch_norm(conv1x1(out, block.out_conv.conv), block.out_conv.bn, training).reshape(x.shape)
    return conv_module(torch.cat([out, x.flatten(2)], dim=1), block.out_conv, training).reshape(x.shape)


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('fusion', ['residual', 'concat'])
@pytest.mark.parametrize('shape, factor', [((13, ), 4), ((9, 11), 4), ((8, 6), (4, 3)), ((5, 6), 8), ((3, 5, 4), 2)],
                         ids=str)
def test_matches_reference_float64(shape, factor, fusion, training):
    block = randomise_(ISABlock(8, down_factor=factor, fusion=fusion)).double().train(training)
    x = _randn(2, 8, *shape)
    assert rel_err(block(x), reference(block, x, training)) < 1e-10


def _mmseg_isa(block, down_factor):
    """mmsegmentation's ``ISAHead`` without its input convolution and classifier: ``out_conv(cat(relations, x))``."""
    from mmseg.models.decode_heads.isa_head import ISAHead
    head = ISAHead(isa_channels=block.inner_channels, down_factor=down_factor, in_channels=block.in_channels,
                   channels=block.in_channels, num_classes=1, norm_cfg=dict(type='BN'))
    head.in_conv, head.conv_seg, head.dropout = nn.Identity(), nn.Identity(), None
    return head


@needs_mmseg
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('shape, factor', [((16, 16), 8), ((13, 10), 8), ((3, 20), 8), ((9, 11), (4, 3))], ids=str)
def test_equals_mmsegmentation(shape, factor, training):
    ours = randomise_(ISABlock(16, down_factor=factor, fusion='concat'), seed=3)
    upstream = _mmseg_isa(ours, factor if isinstance(factor, tuple) else (factor, factor))
    upstream.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(upstream.state_dict(), strict=True)
    x = _randn(2, 16, *shape, dtype=torch.float32)
    ours.train(training), upstream.train(training)
    assert rel_err(ours(x), upstream([x])) < 1e-5


def test_affinity_is_the_long_range_graph_of_the_padded_map():
    block = randomise_(ISABlock(8, down_factor=4)).double().eval()
    x = _randn(1, 8, 6, 7)
    padded = block.graph_operator(x).dense()[0]
    assert padded.shape == (64, 64)  # padded to 8 x 8
    mask = same_group((8, 8), (4, 4), 'long')
    assert not padded[~mask].any() and torch.allclose(padded.sum(-1), torch.ones(64, dtype=padded.dtype))
    # the map's own 6 x 7 positions: rows 1-6 and columns 0-6 of the padded map (pad // 2 before)
    rows = [r * 8 + c for r in range(1, 7) for c in range(7)]
    assert torch.equal(block.affinity(x)[0], padded[rows][:, rows])


def test_errors():
    with pytest.raises(ValueError, match='ISABlock: down_factor must be a positive int'):
        ISABlock(8, down_factor=(8, 0))
    with pytest.raises(ValueError, match="ISABlock: fusion must be one of \\('residual', 'concat'\\)"):
        ISABlock(8, fusion='add')
    block = ISABlock(8, down_factor=(4, 4))
    assert block.spatial_ranks == (2, )
    with pytest.raises(ValueError, match='len\\(S\\) in \\(2,\\)'):
        block(torch.zeros(1, 8, 16))


@needs_mmseg
@pytest.mark.parametrize('fusion', ['residual', 'concat'])
def test_benchmark_reference_is_mmsegmentations_head_middle(fusion):
    """``benchmark_blocks.py``'s reference (the middle of mmsegmentation's ``ISAHead`` with the block's fusion)
    takes the block's state dict strictly and computes its numbers."""
    from snl_mm.analysis.benchmark.references import MMSegISA, reference
    block = randomise_(ISABlock(16, fusion=fusion), seed=7).train()
    ref, why = reference('mmcv', block, (2, 16, 13, 10))
    assert why == '' and isinstance(ref, MMSegISA)
    x = _randn(2, 16, 13, 10, dtype=torch.float32)
    assert rel_err(ref(x), block(x)) < 1e-5
