"""mmaction2's I3D (ResNet3d) with blocks: the shipped config edited, each of the six blocks, Recognizer3D."""
import pytest
import torch
from mmengine.registry import init_default_scope

import snl_mm.backbones as backbones

#: the six blocks of the package, as registered in mmengine's root MODELS.
from snl_mm.blocks import BLOCK_NAMES as SIX_BLOCKS  # noqa: E402
I3D_BASE = 'mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py'

# mmaction2's non-local I3D places blocks after residual blocks 1, 3 of res3 and 1, 3, 5 of res4
# (its non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0))).
I3D_EDIT = """
_base_ = '{base}'
custom_imports = dict(imports=['snl_mm'], allow_failed_imports=False)
model = dict(backbone=dict(
    type='snl_mm.ResNet3d',
    pretrained=None,   # the shipped config inflates torchvision://resnet50, out of reach offline
    plugins=[dict(cfg=dict(type='{block}'),
                  stages=(False, True, True, False),
                  position='after_block',
                  blocks=((), (1, 3), (1, 3, 5), ()))]))
"""
PLAIN = """
_base_ = '{base}'
model = dict(backbone=dict(pretrained=None))
"""
EXPECTED_PATHS = ['layer2.1', 'layer2.3', 'layer3.1', 'layer3.3', 'layer3.5']


@pytest.fixture(scope='module')
def plain_i3d(tmp_path_factory, randomise_norms_):
    """The shipped I3D recognizer, plain, initialised, with random norms."""
    from mmaction.registry import MODELS
    from mmengine.config import Config

    path = tmp_path_factory.mktemp('i3d') / 'plain.py'
    path.write_text(PLAIN.format(base=I3D_BASE))
    init_default_scope('mmaction')
    model = MODELS.build(Config.fromfile(str(path)).model)
    model.init_weights()
    randomise_norms_(model, seed=0)
    return model


def _clip_sample():
    from mmaction.structures import ActionDataSample
    sample = ActionDataSample()
    sample.set_gt_label(3)
    return sample


@pytest.mark.parametrize('block_type', SIX_BLOCKS)
def test_i3d_config_with_each_block(block_type, config_from, plain_i3d, keys_under):
    from mmaction.registry import MODELS

    init_default_scope('mmaction')
    cfg = config_from(I3D_EDIT.format(base=I3D_BASE, block=block_type))
    model = MODELS.build(cfg.model)
    model.init_weights()
    backbone = model.backbone
    assert isinstance(backbone, backbones.ResNet3d)
    abbr = backbone.plugin_paths[0].rsplit('.', 1)[1]
    assert backbone.plugin_paths == [f'{p}.{abbr}' for p in EXPECTED_PATHS]
    for path in backbone.plugin_paths:
        block = backbone.get_submodule(path)
        assert type(block).__name__ == block_type
        assert block.in_channels == (512 if path.startswith('layer2') else 1024)

    # the plain recognizer's weights load with exactly the blocks' keys missing
    result = model.load_state_dict(plain_i3d.state_dict(), strict=False)
    expected = keys_under(model.state_dict(), [f'backbone.{p}' for p in backbone.plugin_paths])
    assert expected and sorted(result.missing_keys) == expected
    assert result.unexpected_keys == []

    # identity at init: the plain recognizer's output, exactly
    clip = torch.randn(1, 1, 3, 8, 64, 64)
    model.eval()
    plain_i3d.eval()
    with torch.no_grad():
        assert torch.equal(model(clip, mode='tensor'), plain_i3d(clip, mode='tensor'))

    # forward and backward through Recognizer3D's loss; the blocks' output layers receive gradients
    model.train()
    losses = model(clip, [_clip_sample()], mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    loss.backward()
    for path in backbone.plugin_paths:
        grads = [p.grad for p in backbone.get_submodule(path).parameters() if p.requires_grad]
        assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads), path


def test_resnet3d_own_non_local_keeps_working(keys_under, randomise_norms_):
    """mmaction2's own ``non_local`` option and an inserted block in the same residual block."""
    common = dict(depth=50, pretrained=None, pretrained2d=False, conv_cfg=dict(type='Conv3d'),
                  non_local=((0, 0, 0), (0, 1, 0, 1), (0, 0, 0, 0, 0, 0), (0, 0, 0)),
                  non_local_cfg=dict(sub_sample=True, use_scale=False, norm_cfg=dict(type='BN3d'),
                                     mode='embedded_gaussian'))
    from mmaction.models import ResNet3d as PlainResNet3d
    plain = PlainResNet3d(**common)
    plain.init_weights()
    randomise_norms_(plain, seed=1)
    model = backbones.ResNet3d(**common, plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(False, True, False, False), blocks=(1, )),
        dict(cfg=dict(type='NLBlock'), stages=(False, True, False, False), blocks=(1, ), position='after_conv2')])
    model.init_weights()
    assert isinstance(model.layer2[1].non_local_block, torch.nn.Module)
    assert model.plugin_paths == ['layer2.1.snl_block', 'layer2.1.nl_block']
    assert model.layer2[1].nl_block.in_channels == 128
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(result.missing_keys) == keys_under(model.state_dict(), model.plugin_paths)
    assert result.unexpected_keys == []
    model.eval()
    plain.eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
        # the inserted block runs after the residual block's own non_local_block
        order = []
        for name in ('layer2.1.non_local_block', 'layer2.1.snl_block'):
            model.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: order.append(n))
        model(x)
    assert order == ['layer2.1.non_local_block', 'layer2.1.snl_block']


def _conv_module(m, x):
    """A ConvModule's conv, norm and activation, called one by one (no hook of ``m`` runs)."""
    x = m.norm(m.conv(x))
    return m.activate(x) if m.with_activation else x


@pytest.mark.parametrize('position, expected', [
    ('after_conv1', lambda b, x: _conv_module(b.conv1, x)),
    ('after_conv2', lambda b, x: _conv_module(b.conv2, _conv_module(b.conv1, x))),
    ('after_conv3', lambda b, x: _conv_module(b.conv3, _conv_module(b.conv2, _conv_module(b.conv1, x)))),
])
def test_bottleneck3d_positions(position, expected, randomise_norms_):
    """``after_convK`` is the output of mmaction2's ``convK`` ConvModule (conv, norm and, but for conv3, ReLU)."""
    model = backbones.ResNet3d(depth=50, pretrained=None, num_stages=1, out_indices=(0, ), spatial_strides=(1, ),
                               temporal_strides=(1, ), dilations=(1, ), conv_cfg=dict(type='Conv3d'),
                               plugins=[dict(cfg=dict(type='SNLBlock'), blocks=(1, ), position=position)])
    model.init_weights()
    randomise_norms_(model, seed=2)
    model.eval()
    res_block = model.layer1[1]
    seen = {}
    res_block.snl_block.register_forward_pre_hook(lambda m, a: seen.setdefault('x', a[0].clone()))
    res_block.register_forward_pre_hook(lambda m, a: seen.setdefault('block_in', a[0].clone()))
    with torch.no_grad():
        model(torch.randn(1, 3, 4, 32, 32))
        assert torch.equal(seen['x'], expected(res_block, seen['block_in']))


def test_inflated_2d_checkpoint_then_identity(tmp_path, randomise_norms_):
    """``pretrained2d``: a 2D ResNet checkpoint inflates into the backbone, the blocks stay the identity."""
    from mmaction.models import ResNet3d as PlainResNet3d
    from mmpretrain.models import ResNet as ResNet2d
    resnet2d = ResNet2d(depth=18)
    randomise_norms_(resnet2d, seed=3)
    path = tmp_path / 'resnet18_2d.pth'
    torch.save(resnet2d.state_dict(), path)  # torchvision key names: conv1, bn1, layerX.Y.convK, bnK, ...
    common = dict(depth=18, pretrained=str(path), pretrained2d=True, conv_cfg=dict(type='Conv3d'),
                  inflate=((1, 1), (1, 0), (1, 0), (0, 1)))
    model = backbones.ResNet3d(**common, plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(False, True, True, False), blocks=(-1, )),
        dict(cfg=dict(type='NLBlock'), stages=(False, False, True, False), blocks=(0, ), position='after_conv1')])
    plain = PlainResNet3d(**common)
    model.init_weights()
    plain.init_weights()
    # the inflated weights came from the 2D checkpoint (its BN statistics, not the init's constants)
    torch.testing.assert_close(plain.conv1.bn.running_var, resnet2d.bn1.running_var, rtol=0, atol=0)
    for path_ in model.plugin_paths:
        block = model.get_submodule(path_)
        norm = block.norm if hasattr(block, 'norm') else block.conv_out.bn
        assert torch.count_nonzero(norm.weight) == 0, path_
    model.eval()
    plain.eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
