"""CCBlock: criss-cross attention (Huang et al. 2019) in 2D and 3D: identity init, gradients, float64
agreement with a reference that forms the masked dense affinity from the math, mmcv's CrissCrossAttention
with the same state dict, gradcheck, mixed precision, bad arguments."""
import itertools

import pytest
import torch
from mmcv.cnn import build_plugin_layer
from tests.blocks.reference import conv1x1, randomise_, rel_err, softmax_rows, tokens

from snl_mm.blocks import CCBlock
from snl_mm.registry import ROOT_MODELS

SHAPES = {2: (2, 16, 4, 5), 3: (2, 16, 3, 4, 5)}
RANKS = sorted(SHAPES)


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _random_block(seed=0, **kwargs) -> CCBlock:
    return randomise_(CCBlock(16, **kwargs), seed=seed).double()


def cross_mask(spatial) -> torch.Tensor:
    """``mask[i, j]``: ``j`` differs from ``i`` in at most one coordinate (row-major numbering)."""
    coords = list(itertools.product(*[range(s) for s in spatial]))
    return torch.tensor([[sum(a != b for a, b in zip(ci, cj)) <= 1 for cj in coords] for ci in coords])


def cc_affinity(block: CCBlock, xf: torch.Tensor, spatial) -> torch.Tensor:
    """``A_ij = exp(q_i . k_j) / sum_{l in cross(i)} exp(q_i . k_l)`` on the cross, 0 elsewhere."""
    logits = tokens(conv1x1(xf, block.query_conv)) @ conv1x1(xf, block.key_conv)
    return softmax_rows(logits.masked_fill(~cross_mask(spatial), float('-inf')))


def cc_reference(block: CCBlock, x: torch.Tensor) -> torch.Tensor:
    """``X <- X + gamma (A V)`` ``recurrence`` times with the same weights, ``A`` from the current ``X``."""
    b, c = x.shape[:2]
    out = x.reshape(b, c, -1)
    for _ in range(block.recurrence):
        a = cc_affinity(block, out, x.shape[2:])
        v = tokens(conv1x1(out, block.value_conv))
        out = out + block.gamma.scale * tokens(a @ v)
    return out.reshape(x.shape)


def test_init_weights_restores_identity():
    block = randomise_(CCBlock(16))
    x = _x(SHAPES[2], dtype=torch.float32)
    assert not torch.equal(block(x), x)
    block.init_weights()
    assert block.gamma.scale.item() == 0
    assert torch.equal(block(x), x)


def test_defaults():
    block = CCBlock(64)
    assert (block.key_channels, block.recurrence) == (8, 2)
    assert block.value_conv.out_channels == 64 and block.value_conv.bias is not None
    assert CCBlock(64, reduction=2).key_channels == 32
    assert CCBlock(64, key_channels=5).key_channels == 5
    assert CCBlock(4).key_channels == 1


@pytest.mark.parametrize('rank', RANKS)
def test_gradients_reach_every_parameter(rank):
    block = CCBlock(16)
    with torch.no_grad():
        block.gamma.scale.fill_(0.7)
    x = _x(SHAPES[rank], dtype=torch.float32)
    (block(x) * _x(SHAPES[rank], seed=2, dtype=torch.float32)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('recurrence', [1, 2, 3])
@pytest.mark.parametrize('rank', RANKS)
def test_matches_reference_float64(rank, recurrence):
    block = _random_block(recurrence=recurrence)
    x = _x(SHAPES[rank])
    y_ref = cc_reference(block, x)
    err = rel_err(block(x), y_ref)
    assert err < 1e-10, err
    assert not torch.equal(y_ref, x)


def test_recurrence_shares_weights():
    block = _random_block(recurrence=2)
    single = _random_block(recurrence=1)
    x = _x(SHAPES[3])
    assert rel_err(block(x), single(single(x))) < 1e-12
    assert len(list(block.parameters())) == 7


@pytest.mark.parametrize('rank', RANKS)
def test_affinity_lives_on_the_cross_with_the_centre_once(rank):
    block = _random_block()
    x = _x(SHAPES[rank])
    spatial = x.shape[2:]
    xf = x.reshape(*x.shape[:2], -1)
    a = block.affinity(x)
    n = xf.shape[-1]
    assert a.shape == (x.shape[0], n, n)
    mask = cross_mask(spatial)
    # 2D: H + W - 1 positions per row; 3D: T + H + W - 2 (row, column and time line, centre once)
    assert (mask.sum(1) == sum(spatial) - (len(spatial) - 1)).all()
    assert ((a > 0) == mask).all()  # zero exactly outside the cross, positive on it
    assert torch.allclose(a.sum(-1), torch.ones(x.shape[0], n, dtype=a.dtype), atol=1e-12)
    assert rel_err(a, cc_affinity(block, xf, spatial)) < 1e-12
    # the centre's weight is exp(s_ii) / sum over the cross, not twice that
    logits = tokens(conv1x1(xf, block.query_conv)) @ conv1x1(xf, block.key_conv)
    z = torch.logsumexp(logits.masked_fill(~mask, float('-inf')), dim=-1)
    centre = torch.exp(torch.diagonal(logits, dim1=1, dim2=2) - z)
    assert torch.allclose(torch.diagonal(a, dim1=1, dim2=2), centre, rtol=1e-12, atol=0)


@pytest.mark.parametrize('rank', RANKS)
def test_forward_uses_the_dense_affinity(rank):
    """The line-by-line forward equals ``x + gamma A V`` with the dense ``affinity`` (first step)."""
    block = _random_block(recurrence=1)
    x = _x(SHAPES[rank])
    xf = x.reshape(*x.shape[:2], -1)
    v = tokens(conv1x1(xf, block.value_conv))
    y = xf + block.gamma.scale * tokens(block.affinity(x) @ v)
    assert rel_err(block(x), y.reshape(x.shape)) < 1e-12


def test_1d_input_raises_naming_the_ranks():
    block = CCBlock(16)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\) or \(B, C, T, H, W\).*\(2, 3\).*\(2, 16, 7\)'):
        block(torch.zeros(2, 16, 7))
    with pytest.raises(ValueError, match=r'len\(S\) in \(2, 3\)'):
        block.affinity(torch.zeros(2, 16, 7))


def test_checkpoint_keys_are_mmcv_s():
    assert set(CCBlock(16).state_dict()) == {
        'query_conv.weight', 'query_conv.bias', 'key_conv.weight', 'key_conv.bias', 'value_conv.weight',
        'value_conv.bias', 'gamma.scale'
    }


def _mmcv_cc():
    try:
        from mmcv.ops import CrissCrossAttention
    except ImportError as err:
        pytest.skip(f'mmcv.ops cannot import ({err}): it needs the compiled mmcv (tools/build_mmcv.sh)')
    return CrissCrossAttention


@pytest.mark.parametrize('recurrence', [1, 2])
@pytest.mark.parametrize('hw', [(5, 7), (1, 6), (6, 1), (1, 1)])
def test_matches_mmcv_criss_cross_attention(hw, recurrence):
    criss_cross = _mmcv_cc()
    ref = randomise_(criss_cross(16), seed=3).double()
    block = CCBlock(16, recurrence=recurrence).double()
    block.load_state_dict(ref.state_dict(), strict=True)
    x = _x((2, 16, *hw))
    y_ref = x
    for _ in range(recurrence):
        y_ref = ref(y_ref)
    err = rel_err(block(x), y_ref)
    assert err < 1e-10, err
    with torch.no_grad():
        assert rel_err(block.float()(x.float()), ref.float()(x.float()) if recurrence == 1
                       else ref.float()(ref.float()(x.float()))) < 1e-5


def test_softmax_runs_in_float32_under_autocast():
    block = randomise_(CCBlock(16), std=0.3)
    x = _x(SHAPES[3], dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        weights = block.graph_operator(x).line_weights()
        a = block.affinity(x)
        y = block(x)
    assert all(w.dtype == torch.float32 for w in weights)
    assert a.dtype == torch.float32
    assert torch.allclose(a.sum(-1), torch.ones(a.shape[:2]), atol=1e-6)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert rel_err(y, block(x)) < 3e-2


@pytest.mark.parametrize('shape', [(2, 16, 1, 1), (2, 16, 1, 1, 1)])
def test_single_position(shape):
    block = randomise_(CCBlock(16))
    x = _x(shape, dtype=torch.float32)
    for autocast in (False, True):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            y = block(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.equal(block.affinity(x), torch.ones(2, 1, 1))


def test_registry_and_plugin_build():
    block = ROOT_MODELS.build(dict(type='CCBlock', in_channels=16, recurrence=1))
    assert isinstance(block, CCBlock) and block.recurrence == 1
    name, layer = build_plugin_layer(dict(type='CCBlock'), in_channels=32)
    assert name == 'cc_block' and isinstance(layer, CCBlock) and layer.key_channels == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match=r'recurrence must be an integer >= 1'):
        CCBlock(16, recurrence=0)
    with pytest.raises(ValueError, match=r'key_channels must be a positive integer'):
        CCBlock(16, key_channels=0)
    with pytest.raises(ValueError, match=r'reduction must be a positive integer'):
        CCBlock(16, reduction=0)
    with pytest.raises(ValueError, match=r'norm_cfg must be None: criss-cross attention has no output norm'):
        CCBlock(16, norm_cfg=dict(type='BN'))
    with pytest.raises(ValueError, match=r'act_cfg must be None'):
        CCBlock(16, act_cfg=dict(type='ReLU'))
    with pytest.raises(ValueError, match=r'in_channels must be a positive integer'):
        CCBlock(0)


def test_training_step_allocates_few_maps():
    """The applications run on the token layout without line-major copies: one training step of the default
    block (R = 2) allocates about 18 feature maps' worth of memory in all (the transpositions in and out,
    per application the packed projections, the attended values, the output and their gradients), where
    copying every line direction forward and backward takes over 70. Counted with the profiler's memory
    records at C = 256, 16 x 16, where the attention maps are 1/16 of a feature map."""
    from torch.profiler import ProfilerActivity, profile
    block = randomise_(CCBlock(256), seed=0)
    x = _x((2, 256, 16, 16), dtype=torch.float32).requires_grad_()
    grad = torch.randn_like(x)
    block(x).backward(grad)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        block(x).backward(grad)
    allocated = sum(e.nbytes() for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]' and e.nbytes() > 0)
    maps = allocated / (x.numel() * x.element_size())
    assert maps < 24, maps
