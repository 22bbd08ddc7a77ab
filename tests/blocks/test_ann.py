"""ANN's blocks (APNB, AFNB): float64 against a reference written from the formula, float32 against
mmsegmentation's ``APNB`` / ``AFNB`` with the same state dict, gradients, errors."""
import pytest
import torch
import torch.nn.functional as F
from tests.blocks.reference import batch_norm, conv1x1, randomise_, rel_err, tokens

from snl_mm.blocks import AFNBBlock, APNBBlock
from snl_mm.utils.optional import mmseg_available

needs_mmseg = pytest.mark.skipif(not mmseg_available(), reason='mmsegmentation needs a compiled mmcv (mmcv.ops)')

ADAPTIVE = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
SPATIAL = {1: (11, ), 2: (7, 9), 3: (3, 5, 4)}


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def conv_module(x, module, training):
    """mmcv's ``ConvModule`` (1x1 conv, BN, ReLU) on ``(B, C, N)``."""
    y = batch_norm(conv1x1(x, module.conv), module.bn, training)
    return torch.relu(y) if module.with_activation else y


def pooled(m, scales):
    """``(B, c, *S) -> (B, S_anchors, c)``: adaptive average pooling at each scale, concatenated."""
    return torch.cat([ADAPTIVE[m.dim() - 2](m, s).flatten(2) for s in scales], dim=2).transpose(1, 2)


def reference(block, x, context=None, training=False):
    """``Y = X + BN(W R (P V))`` or ``relu?(BN(W_b [W R (P V); X]))``, ``R = softmax(Q (P K)^T / sqrt(Cs))``, one
    term per stage, from the block's weights."""
    feats = x if context is None else context
    b, spatial = x.shape[0], feats.shape[2:]
    xf, ff = x.flatten(2), feats.flatten(2)
    out = 0
    for stage in block.stages:
        q = conv_module(xf, stage.query_project, training)
        k = conv_module(ff, stage.key_project, training).reshape(b, -1, *spatial)
        v = conv1x1(ff, stage.value_project).reshape(b, -1, *spatial)
        r = torch.softmax(tokens(q) @ pooled(k, block.pool_scales).transpose(1, 2) / q.shape[1]**0.5, dim=-1)
        out = out + conv1x1(tokens(r @ pooled(v, block.pool_scales)), stage.out_project)
    if block.fusion == 'residual':
        return x + batch_norm(out, block.norm, training).reshape(x.shape)
    return conv_module(torch.cat([out, xf], dim=1), block.bottleneck, training).reshape(x.shape)


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('fusion', ['residual', 'concat'])
@pytest.mark.parametrize('rank', [1, 2, 3])
def test_apnb_matches_reference_float64(rank, fusion, training):
    block = randomise_(APNBBlock(8, fusion=fusion, pool_scales=(1, 2, 3))).double().train(training)
    x = _randn(2, 8, *SPATIAL[rank])
    assert rel_err(block(x), reference(block, x, training=training)) < 1e-10


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('fusion', ['residual', 'concat'])
def test_afnb_with_a_context_map_matches_reference_float64(fusion, training):
    """Queries from ``x`` ``(B, 8, 7, 9)``, keys and values from a context map of other channels and size."""
    block = randomise_(AFNBBlock(8, inner_channels=4, context_channels=6, fusion=fusion)).double().train(training)
    x, context = _randn(2, 8, 7, 9, seed=1), _randn(2, 6, 10, 5, seed=2)
    assert rel_err(block(x, context), reference(block, x, context, training=training)) < 1e-10
    assert block.affinity(x, context).shape == (2, 63, 50)


def test_stages_sum_their_contexts_float64():
    block = randomise_(APNBBlock(8, query_scales=(1, 1))).double().eval()
    assert len(block.stages) == 2
    x = _randn(2, 8, 7, 9)
    assert rel_err(block(x), reference(block, x)) < 1e-10


def _mmseg_apnb(block, norm_cfg):
    from mmseg.models.decode_heads.ann_head import APNB
    return APNB(block.in_channels, block.inner_channels, block.in_channels, block.query_scales, block.pool_scales,
                None, norm_cfg, dict(type='ReLU'))


def _mmseg_afnb(block, norm_cfg):
    from mmseg.models.decode_heads.ann_head import AFNB
    return AFNB(block.context_channels, block.in_channels, block.inner_channels, block.in_channels,
                block.query_scales, block.pool_scales, None, norm_cfg, dict(type='ReLU'))


@needs_mmseg
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('query_scales', [(1, ), (1, 1)], ids=['one-stage', 'two-stages'])
def test_apnb_equals_mmsegmentation(query_scales, training):
    """``fusion='concat'`` is mmsegmentation's ``APNB``: its state dict loads strictly, both ways, and the
    outputs agree; the shared projection is one module under both of mmsegmentation's names."""
    ours = randomise_(APNBBlock(16, query_scales=query_scales, fusion='concat'), seed=3)
    upstream = _mmseg_apnb(ours, dict(type='BN'))
    upstream.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(upstream.state_dict(), strict=True)
    assert ours.stages[0].query_project is ours.stages[0].key_project
    x = _randn(2, 16, 13, 10, dtype=torch.float32)
    ours.train(training), upstream.train(training)
    assert rel_err(ours(x), upstream(x)) < 1e-5


@needs_mmseg
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_afnb_equals_mmsegmentation(training):
    ours = randomise_(AFNBBlock(16, inner_channels=8, context_channels=12, fusion='concat'), seed=4)
    upstream = _mmseg_afnb(ours, dict(type='BN'))
    upstream.load_state_dict(ours.state_dict(), strict=True)
    x, context = _randn(2, 16, 13, 10, seed=5, dtype=torch.float32), _randn(2, 12, 9, 11, seed=6, dtype=torch.float32)
    ours.train(training), upstream.train(training)
    assert rel_err(ours(x, context), upstream(context, x)) < 1e-5


def test_mmsegmentation_init_in_the_concat_form():
    """Built with ``fusion='concat'`` the block starts as mmsegmentation's: ``out_project`` zero, unit norms."""
    block = APNBBlock(16, fusion='concat')
    assert not block.stages[0].out_project.weight.any() and not block.stages[0].out_project.bias.any()
    assert torch.equal(block.bottleneck.bn.weight, torch.ones(16))
    x = _randn(2, 16, 5, 6, dtype=torch.float32)
    assert not torch.equal(block(x), x)  # bottleneck(cat(0, X)): not a residual


def test_errors():
    with pytest.raises(ValueError, match=r"query_scales must be a non-empty tuple of 1s .* got \(2,\): a query scale "
                                         r"> 1 max-pools the queries"):
        APNBBlock(8, query_scales=(2, ))
    with pytest.raises(ValueError, match="fusion must be one of \\('residual', 'concat'\\)"):
        APNBBlock(8, fusion='sum')
    with pytest.raises(ValueError, match='APNBBlock: PyramidAnchors: pool_scales must be'):
        APNBBlock(8, pool_scales=(0, 2))
    with pytest.raises(ValueError, match='context_channels must be a positive integer'):
        AFNBBlock(8, context_channels=0)
    block = AFNBBlock(8, context_channels=6)
    with pytest.raises(ValueError, match='context_channels=6 != in_channels=8: call it with its context map'):
        block(torch.zeros(1, 8, 4, 4))
    with pytest.raises(ValueError, match=r'expects a context map \(B=1, C_c=6, \*S_c\)'):
        block(torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 4, 4))


@needs_mmseg
@pytest.mark.parametrize('cls', [APNBBlock, AFNBBlock])
@pytest.mark.parametrize('fusion', ['residual', 'concat'])
def test_benchmark_reference_is_mmsegmentations_attention(cls, fusion):
    """``benchmark_blocks.py``'s reference (mmsegmentation's ANN stages with the block's fusion) takes the block's
    state dict strictly and computes its numbers."""
    from snl_mm.analysis.benchmark.references import MMSegANN, reference
    block = randomise_(cls(16, fusion=fusion), seed=7).train()
    ref, why = reference('mmcv', block, (2, 16, 13, 10))
    assert why == '' and isinstance(ref, MMSegANN) and ref.training
    x = _randn(2, 16, 13, 10, dtype=torch.float32)
    assert rel_err(ref(x), block(x)) < 1e-5
    assert reference('mmcv', APNBBlock(8), (2, 8, 13))[1] == "mmsegmentation's module is 2D"
