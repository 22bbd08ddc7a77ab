"""PluginBackbone: blocks after named submodules of any registered backbone, which keeps its class and keys."""
import copy

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from snl_mm.backbones import PluginBackbone, ResNet
from snl_mm.registry import MODELS

SNL = dict(type='SNLBlock', reduction=2)


def r18_wrapper(**kwargs) -> PluginBackbone:
    return PluginBackbone(backbone=dict(type='mmpretrain.ResNet', depth=18, **kwargs),
                          plugins=[dict(cfg=SNL, after='layer3.0'),
                                   dict(cfg=dict(type='NLBlock'), after='layer2.1.conv2')])


def test_keys_are_those_of_the_plain_backbone_plus_the_blocks(keys_under):
    from mmpretrain.models import ResNet as PlainResNet
    model = r18_wrapper()
    plain = PlainResNet(depth=18)
    assert model.plugin_paths == ['layer3.0.snl_block', 'layer2.1.conv2.nl_block']
    assert type(model) is type(plain)  # a thin alias: the wrapped backbone itself
    keys = set(model.state_dict())
    block_keys = keys_under(model.state_dict(), model.plugin_paths, counters=True)
    assert keys - set(block_keys) == set(plain.state_dict())
    assert not any(k.startswith('backbone.') for k in keys)
    # a block after a residual block has the key of an after_block plugin of snl_mm.ResNet there
    resnet = ResNet(depth=18, plugins=[dict(cfg=SNL, stages=(False, False, True, False), blocks=(0, ))])
    assert keys_under(resnet.state_dict(), resnet.plugin_paths) == keys_under(
        model.state_dict(), ['layer3.0.snl_block'])


def test_round_trip_and_plain_checkpoint(keys_under, randomise_norms_):
    from mmpretrain.models import ResNet as PlainResNet
    plain = PlainResNet(depth=18)
    plain.init_weights()
    randomise_norms_(plain, seed=0)
    model = r18_wrapper()
    model.init_weights()
    result = model.load_state_dict(plain.state_dict(), strict=False)
    # missing keys are reported as a checkpoint names them
    assert sorted(result.missing_keys) == keys_under(model.state_dict(), model.plugin_paths)
    assert result.unexpected_keys == []
    model.eval()
    plain.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), plain(x)))
    twin = r18_wrapper()
    twin.load_state_dict(model.state_dict(), strict=True)
    twin.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(twin(x), plain(x)))


@pytest.mark.parametrize('where', ['wrapper', 'inner'])
def test_pretrained_init_cfg(where, tmp_path, randomise_norms_):
    """``init_cfg=dict(type='Pretrained')`` of a plain checkpoint, on the wrapper or the wrapped backbone."""
    from mmpretrain.models import ResNet as PlainResNet
    plain = PlainResNet(depth=18)
    randomise_norms_(plain, seed=1)
    path = tmp_path / 'plain_r18.pth'
    torch.save(plain.state_dict(), path)
    pretrained = dict(type='Pretrained', checkpoint=str(path))
    if where == 'wrapper':
        model = PluginBackbone(backbone=dict(type='mmpretrain.ResNet', depth=18),
                               plugins=[dict(cfg=SNL, after='layer4.0')], init_cfg=pretrained)
    else:
        model = PluginBackbone(backbone=dict(type='mmpretrain.ResNet', depth=18, init_cfg=pretrained),
                               plugins=[dict(cfg=SNL, after='layer4.0')])
    model.init_weights()
    block = model.layer4[0].snl_block
    assert torch.count_nonzero(block.norm.weight) == 0
    model.eval()
    plain.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], plain(x)[0])


def test_checkpoint_with_trained_blocks_keeps_them(tmp_path, randomise_norms_):
    """A Pretrained checkpoint that has the blocks' weights loads them; they are not reset to the identity."""
    trained = ResNet(depth=18, plugins=[dict(cfg=SNL, stages=(False, False, False, True), blocks=(0, ))])
    randomise_norms_(trained, seed=2)
    path = tmp_path / 'trained.pth'
    torch.save(trained.state_dict(), path)
    x = torch.randn(1, 3, 64, 64)
    trained.eval()
    with torch.no_grad():
        expected = trained(x)[0]
    pretrained = dict(type='Pretrained', checkpoint=str(path))
    for model in (ResNet(depth=18, init_cfg=pretrained, plugins=[
                      dict(cfg=SNL, stages=(False, False, False, True), blocks=(0, ))]),
                  PluginBackbone(backbone=dict(type='mmpretrain.ResNet', depth=18),
                                 plugins=[dict(cfg=SNL, after='layer4.0')], init_cfg=pretrained)):
        model.init_weights()
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x)[0], expected)


def test_load_from_into_image_classifier(tmp_path, randomise_norms_):
    """``load_from`` of a plain classifier checkpoint (``backbone.*`` keys) into one with a PluginBackbone."""
    from mmengine.runner import save_checkpoint
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    init_default_scope('mmpretrain')
    head = dict(type='LinearClsHead', num_classes=10, in_channels=512)
    plain = MMPRETRAIN_MODELS.build(dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
                                         neck=dict(type='GlobalAveragePooling'), head=head))
    randomise_norms_(plain, seed=3)
    path = tmp_path / 'epoch_1.pth'
    save_checkpoint(plain.state_dict(), str(path))
    model = MMPRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='snl_mm.PluginBackbone', backbone=dict(type='ResNet', depth=18),
                      plugins=[dict(cfg=SNL, after='layer3.1')]),
        neck=dict(type='GlobalAveragePooling'), head=head))
    model.init_weights()
    load_checkpoint(model, str(path), map_location='cpu')
    keys = list(model.state_dict())
    assert 'backbone.layer3.1.snl_block.theta.weight' in keys
    assert not any(k.startswith('backbone.backbone.') for k in keys)
    model.eval()
    plain.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), plain(x, mode='tensor'))


def test_vgg_channels_inferred_and_identity(randomise_norms_, keys_under):
    """A backbone without residual stages; ``after`` names a max-pool, whose channels come from before it."""
    model = MODELS.build(dict(type='snl_mm.PluginBackbone',
                              backbone=dict(type='mmpretrain.VGG', depth=11, norm_cfg=dict(type='BN'),
                                            out_indices=(4, )),
                              plugins=[dict(cfg=SNL, after='features.6'),
                                       dict(cfg=dict(type='CCBlock'), after='features.8')]))
    assert model.plugin_paths == ['features.6.snl_block', 'features.8.' + model.plugin_paths[1].split('.')[-1]]
    assert model.features[6].snl_block.in_channels == 256
    assert model.get_submodule(model.plugin_paths[1]).in_channels == 512
    model.init_weights()  # VGG's init sets every BN weight to 1; the blocks are the identity again
    randomise_norms_(model.features, seed=4)
    for path in model.plugin_paths:
        model.get_submodule(path).init_weights()
    from mmpretrain.models import VGG
    plain = VGG(depth=11, norm_cfg=dict(type='BN'), out_indices=(4, ))
    state = model.state_dict()
    block_keys = set(keys_under(state, model.plugin_paths, counters=True))
    plain.load_state_dict({k: v for k, v in state.items() if k not in block_keys}, strict=True)
    model.eval()
    plain.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], plain(x)[0])
        twin = copy.deepcopy(model)
        randomise_norms_(twin.features[6].snl_block, seed=5)
        assert not torch.equal(twin(x)[0], plain(x)[0])
        assert torch.equal(model(x)[0], plain(x)[0])
