"""NLBlock: the nonlocal block, numerically mmcv's ``NonLocal1d/2d/3d`` (and mmaction2's I3D non-local layers)
loaded from their state dicts, and a reference written from Appendix B.1."""
import pytest
import torch
from mmcv.cnn import NonLocal2d
from mmcv.cnn.bricks.non_local import NonLocal1d, NonLocal3d
from tests.blocks.reference import nl_reference, randomise_, randomise_norms_, rel_err

from snl_mm.blocks import NLBlock

SHAPES = {1: (2, 8, 7), 2: (2, 8, 5, 6), 3: (2, 8, 3, 4, 5)}
RANKS = sorted(SHAPES)
MODES = ('embedded_gaussian', 'gaussian', 'dot_product')
MMCV = {1: (NonLocal1d, 'BN1d'), 2: (NonLocal2d, 'BN'), 3: (NonLocal3d, 'BN3d')}


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_identity_without_norm():
    block = NLBlock(8, norm_cfg=None)
    x = _x(SHAPES[2], dtype=torch.float32)
    assert torch.equal(block(x), x)


# softmax_j(theta_i . (phi_j + b)) does not depend on the phi bias b: its gradient is exactly zero
STRUCTURALLY_ZERO = {'embedded_gaussian': {'phi.conv.bias', 'phi.0.conv.bias'}}


@pytest.mark.parametrize('sub_sample', [False, True], ids=['full', 'sub'])
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('rank', RANKS)
def test_gradients_reach_every_parameter(rank, mode, sub_sample):
    block = randomise_norms_(NLBlock(8, mode=mode, sub_sample=sub_sample)).double().eval()
    x = _x(SHAPES[rank])
    (block(x) * _x(SHAPES[rank], seed=2)).sum().backward()
    scale = max(p.grad.abs().max() for p in block.parameters())
    zero = STRUCTURALLY_ZERO.get(mode, set())
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        if name in zero:
            assert p.grad.abs().max() < 1e-12 * scale, name
        else:
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('sub_sample', [False, True], ids=['full', 'sub'])
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('rank', RANKS)
def test_matches_reference_float64(rank, mode, sub_sample, training):
    block = randomise_(NLBlock(8, mode=mode, sub_sample=sub_sample)).double().train(training)
    x = _x(SHAPES[rank])
    err = rel_err(block(x), nl_reference(block, x, training=training))
    assert err < 1e-10, err


def test_use_scale_false_matches_reference():
    block = randomise_(NLBlock(8, use_scale=False)).double().eval()
    x = _x(SHAPES[3])
    assert rel_err(block(x), nl_reference(block, x)) < 1e-10


@pytest.mark.parametrize('sub_sample', [False, True], ids=['full', 'sub'])
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('rank', RANKS)
def test_equals_mmcv_nonlocal(rank, mode, sub_sample):
    mmcv_cls, norm = MMCV[rank]
    ref = mmcv_cls(8, mode=mode, sub_sample=sub_sample, norm_cfg=dict(type=norm))
    randomise_(ref, seed=7)
    block = NLBlock(8, mode=mode, sub_sample=sub_sample, norm_cfg=dict(type=norm))
    block.load_state_dict(ref.state_dict(), strict=True)
    ref, block = ref.double(), block.double()
    x = _x(SHAPES[rank], seed=8)
    for training in (False, True):
        ref.train(training), block.train(training)
        y_ref = ref(x)
        err = rel_err(block(x), y_ref)
        assert err < 1e-10, (training, err)
    # train mode updated both running statistics the same way
    assert torch.allclose(block.conv_out.norm.running_mean, ref.conv_out.norm.running_mean, atol=1e-14)
    assert torch.allclose(block.conv_out.norm.running_var, ref.conv_out.norm.running_var, atol=1e-14)


@pytest.mark.parametrize('sub_sample', [False, True], ids=['full', 'sub'])
@pytest.mark.parametrize('rank', [2, 3])
def test_equals_mmcv_nonlocal_without_scale(rank, sub_sample):
    mmcv_cls, norm = MMCV[rank]
    ref = randomise_(mmcv_cls(8, use_scale=False, sub_sample=sub_sample, norm_cfg=dict(type=norm)), seed=13)
    block = NLBlock(8, use_scale=False, sub_sample=sub_sample, norm_cfg=dict(type=norm))
    block.load_state_dict(ref.state_dict(), strict=True)
    ref, block = ref.double().eval(), block.double().eval()
    x = _x(SHAPES[rank], seed=14)
    assert rel_err(block(x), ref(x)) < 1e-10


@pytest.mark.parametrize('mode', MODES)
def test_equals_mmcv_nonlocal2d_float32_with_group_norm(mode):
    ref = randomise_(NonLocal2d(8, mode=mode, norm_cfg=dict(type='GN', num_groups=2)), seed=9)
    block = NLBlock(8, mode=mode, norm_cfg=dict(type='GN', num_groups=2))
    block.load_state_dict(ref.state_dict(), strict=True)
    x = _x(SHAPES[2], seed=10, dtype=torch.float32)
    assert rel_err(block(x), ref(x)) < 1e-5


def test_loads_mmaction2_i3d_nonlocal_layer():
    from snl_mm.patches import mmaction_drn
    mmaction_drn.apply()
    from mmaction.models.backbones.resnet3d import ResNet3d

    backbone = ResNet3d(
        depth=50, pretrained=None, pretrained2d=False,
        non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0)),
        non_local_cfg=dict(sub_sample=True, use_scale=False,
                           norm_cfg=dict(type='BN3d', requires_grad=True), mode='embedded_gaussian'))
    layers = [m for m in backbone.modules() if isinstance(m, NonLocal3d)]
    assert len(layers) == 5
    ref = randomise_(layers[0], std=0.05, seed=11).double().eval()
    channels = ref.in_channels
    block = NLBlock(channels, sub_sample=True, use_scale=False, norm_cfg=dict(type='BN3d'))
    block.load_state_dict(ref.state_dict(), strict=True)
    block.double().eval()
    x = _x((1, channels, 4, 6, 6), seed=12)
    y_ref = ref(x)
    assert rel_err(y_ref, x) > 1e-3  # the layer is not the identity any more
    err = rel_err(block(x), y_ref)
    assert err < 1e-10, err


def test_checkpoint_keys_are_mmcv_keys():
    for sub_sample in (False, True):
        for mode in MODES:
            ours = NLBlock(8, mode=mode, sub_sample=sub_sample, norm_cfg=dict(type='BN3d')).state_dict()
            theirs = NonLocal3d(8, mode=mode, sub_sample=sub_sample,
                                norm_cfg=dict(type='BN3d')).state_dict()
            assert set(ours) == set(theirs)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"mode must be one of \('embedded_gaussian', 'gaussian', "
                                         r"'dot_product'\), got 'concatenation'"):
        NLBlock(8, mode='concatenation')
    with pytest.raises(ValueError, match=r'in_channels=6 is not divisible by reduction=4.*valid'):
        NLBlock(6, reduction=4)
    with pytest.raises(ValueError, match=r'len\(S\) in \(1, 2, 3\)'):
        NLBlock(8)(torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r'in_channels=8'):
        NLBlock(8)(torch.zeros(2, 4, 3, 3))
    with pytest.raises(TypeError, match=r'norm_cfg must be None or a dict with a "type"'):
        NLBlock(8, norm_cfg='BN')
