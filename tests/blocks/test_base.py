"""NonlocalBase: argument validation, the flattened layout, rank-free checkpoints and identity init."""
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModule
from tests.blocks.reference import randomise_

from snl_mm.blocks import NLBlock, NSBlock, SNLBlock
from snl_mm.blocks.base import NonlocalBase
from snl_mm.blocks.tokens import flat_norm_cfg, flatten_map, from_tokens, pointwise_tokens, to_tokens


def _x(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_flat_norm_cfg():
    assert flat_norm_cfg(None) is None
    assert flat_norm_cfg(dict(type='BN3d', requires_grad=True)) == dict(type='BN', requires_grad=True)
    assert flat_norm_cfg(dict(type='BN1d')) == dict(type='BN')
    gn = dict(type='GN', num_groups=2)
    assert flat_norm_cfg(gn) is gn
    cfg = dict(type='BN3d')
    flat_norm_cfg(cfg)
    assert cfg == dict(type='BN3d')  # the caller's config is not modified


@pytest.mark.parametrize('shape', [(2, 3, 7), (2, 3, 4, 5), (2, 3, 2, 3, 4)])
def test_token_layout_round_trip(shape):
    x = _x(shape)
    flat = flatten_map(x)
    assert flat.shape == (2, 3, x[0, 0].numel(), 1)
    assert flat.data_ptr() == x.data_ptr()  # a view, no copy
    t = to_tokens(flat)
    assert t.shape == (2, x[0, 0].numel(), 3)
    assert torch.equal(t[1, 5], x.reshape(2, 3, -1)[1, :, 5])
    assert torch.equal(from_tokens(t), flat)


@pytest.mark.parametrize('conv_type', ['Conv2d', 'ConvWS'])
def test_pointwise_tokens_equals_the_convolutions(conv_type):
    """Plain 1x1 convolutions run as one matrix product on the token layout; other layers (weight
    standardisation) as themselves. Either way the outputs are the convolutions', concatenated."""
    from mmcv.cnn import build_conv_layer
    torch.manual_seed(0)
    convs = [build_conv_layer(dict(type=conv_type), 6, c, kernel_size=1, bias=bias).double()
             for c, bias in ((2, True), (3, False), (4, True))]
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    expected = torch.cat([conv(x) for conv in convs], dim=1).movedim(1, -1)
    assert torch.allclose(pointwise_tokens(convs, x.movedim(1, -1)), expected, atol=1e-13)


def test_channel_arguments():
    assert SNLBlock(12, reduction=3).inner_channels == 4
    assert SNLBlock(10, reduction=3, inner_channels=4).inner_channels == 4  # inner_channels wins
    with pytest.raises(ValueError, match=r'in_channels=10 is not divisible by reduction=3; valid '
                                         r'reductions: \[1, 2, 5, 10\]'):
        SNLBlock(10, reduction=3)
    with pytest.raises(ValueError, match=r'in_channels must be a positive integer, got 0'):
        SNLBlock(0)
    with pytest.raises(ValueError, match=r'in_channels must be a positive integer, got True'):
        SNLBlock(True)
    with pytest.raises(ValueError, match=r'reduction must be a positive integer, got 2.0'):
        SNLBlock(8, reduction=2.0)
    with pytest.raises(ValueError, match=r'inner_channels must be a positive integer, got 0'):
        SNLBlock(8, inner_channels=0)
    with pytest.raises(TypeError, match=r'conv_cfg must be None or a dict with a "type"'):
        SNLBlock(8, conv_cfg=dict(kernel_size=1))
    with pytest.raises(TypeError, match=r'act_cfg must be None or a dict with a "type"'):
        NSBlock(8, act_cfg='ReLU')


def test_input_checks():
    block = SNLBlock(8)
    with pytest.raises(TypeError, match=r'SNLBlock expects a Tensor, got ndarray'):
        block(_x((2, 8, 4)).numpy())
    with pytest.raises(ValueError, match=r'expects input \(B, C, \*S\) with len\(S\) in \(1, 2, 3\), '
                                         r'got shape \(2, 8\)'):
        block(_x((2, 8)))
    with pytest.raises(ValueError, match=r'len\(S\) in \(1, 2, 3\)'):
        block(_x((1, 8, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match=r'built for in_channels=8, got an input with 6 channels'):
        block(_x((2, 6, 4, 4)))
    with pytest.raises(ValueError, match=r'len\(S\) in \(1, 2, 3\)'):
        block.affinity(_x((2, 8)))


@pytest.mark.parametrize('kernel_shape', [(1, 1, 1), (1,)], ids=['3d', '1d'])
def test_rank_specific_checkpoints_load(kernel_shape):
    src = randomise_(SNLBlock(8))
    state = {k: (v.reshape(*v.shape[:2], *kernel_shape) if v.dim() == 4 else v)
             for k, v in src.state_dict().items()}
    assert state['theta.weight'].dim() == 2 + len(kernel_shape)
    dst = SNLBlock(8)
    dst.load_state_dict(state, strict=True)
    assert dst.theta.weight.shape == (4, 8, 1, 1)
    x = _x((2, 8, 3, 4))
    src.eval(), dst.eval()
    assert torch.equal(dst(x), src(x))


def test_non_pointwise_kernels_still_refused():
    state = SNLBlock(8).state_dict()
    state['theta.weight'] = torch.zeros(4, 8, 3, 3)
    with pytest.raises(RuntimeError, match='size mismatch for theta.weight'):
        SNLBlock(8).load_state_dict(state)


class _Model(BaseModule):
    """A model whose init_cfg re-initialises every norm (as upstream backbones do)."""

    def __init__(self, block):
        super().__init__(init_cfg=[dict(type='Constant', val=1, layer='_BatchNorm'),
                                   dict(type='Normal', std=0.5, layer='Conv2d')])
        self.stem = nn.Conv2d(8, 8, 1)
        self.block = block


@pytest.mark.parametrize('block_cls', [NLBlock, NSBlock, SNLBlock])
def test_identity_survives_an_upstream_init_weights(block_cls):
    model = _Model(block_cls(8))
    model.init_weights()
    assert model.stem.weight.std() > 0.1  # the model's own init ran
    x = _x((2, 8, 3, 4))
    assert torch.equal(model.block(x), x)


def test_init_cfg_replaces_the_identity_init():
    block = SNLBlock(8, init_cfg=dict(type='Constant', val=0.5, layer='Conv2d'))
    block.init_weights()
    assert torch.equal(block.theta.weight, torch.full_like(block.theta.weight, 0.5))


def test_base_is_abstract():
    base = NonlocalBase(8)
    with pytest.raises(NotImplementedError):
        base.output_layers()
    with pytest.raises(NotImplementedError):
        base.affinity(_x((1, 8, 2, 2)))
    assert 'in_channels=8, inner_channels=4' in repr(base)
