"""mmpretrain's ResNet family with blocks: the spec's config edit, checkpoint keys, identity, positions."""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope

import snl_mm.backbones as backbones

R50_BASE = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'

SPEC_EDIT = f"""
_base_ = '{R50_BASE}'
custom_imports = dict(imports=['snl_mm'], allow_failed_imports=False)
model = dict(backbone=dict(
    type='snl_mm.ResNet',
    plugins=[dict(cfg=dict(type='SNLBlock', reduction=2),
                  stages=(False, False, True, False),
                  position='after_block',
                  blocks=(-2,))]))   # right before the last residual block of res4, as the paper
"""


@pytest.fixture(scope='module')
def r50_models(tmp_path_factory):
    """(plugin classifier, plain classifier) built from mmpretrain's shipped config, each initialised."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    root = tmp_path_factory.mktemp('configs')
    (root / 'snl.py').write_text(SPEC_EDIT)
    (root / 'plain.py').write_text(f"_base_ = '{R50_BASE}'\n")
    init_default_scope('mmpretrain')
    models = []
    for name in ('snl.py', 'plain.py'):
        model = MODELS.build(Config.fromfile(str(root / name)).model)
        model.init_weights()
        models.append(model.eval())
    return tuple(models)


def test_spec_edit_places_snl_before_last_block_of_res4(r50_models):
    model, plain = r50_models
    backbone = model.backbone
    assert isinstance(backbone, backbones.ResNet)
    assert type(plain.backbone).__name__ == 'ResNet' and not isinstance(plain.backbone, backbones.ResNet)
    assert len(backbone.layer3) == 6  # res4 of ResNet-50
    assert backbone.plugin_paths == ['layer3.4.snl_block']
    block = backbone.get_submodule('layer3.4.snl_block')
    assert type(block).__name__ == 'SNLBlock' and block.in_channels == 1024 and block.inner_channels == 512

    # run order: layer3.4 -> its SNL block -> layer3.5 (the last residual block of res4)
    order = []
    watched = {'layer3.3': None, 'layer3.4': None, 'layer3.4.snl_block': None, 'layer3.5': None}
    handles = [backbone.get_submodule(name).register_forward_hook(
        lambda m, i, o, name=name: order.append(name)) for name in watched]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64), mode='tensor')
    for h in handles:
        h.remove()
    # the block runs within layer3.4's call (on its output), before layer3.5 starts
    assert order == ['layer3.3', 'layer3.4.snl_block', 'layer3.4', 'layer3.5']


def test_plain_checkpoint_loads_with_only_block_keys_missing(r50_models, keys_under):
    model, plain = r50_models
    plain_sd = plain.state_dict()
    result = model.load_state_dict(plain_sd, strict=False)
    block_keys = keys_under(model.state_dict(), ['backbone.layer3.4.snl_block'])
    assert block_keys  # theta, phi, g, w1, w2, norm
    assert sorted(result.missing_keys) == block_keys
    assert result.unexpected_keys == []
    # every upstream key is unchanged
    all_block_keys = keys_under(model.state_dict(), ['backbone.layer3.4.snl_block'], counters=True)
    assert set(model.state_dict()) - set(all_block_keys) == set(plain_sd)


def test_identity_at_init_then_block_changes_output(r50_models, randomise_norms_):
    model, plain = r50_models
    randomise_norms_(plain, seed=1)
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y_plain = plain(x, mode='tensor')
        y = model(x, mode='tensor')
    assert torch.equal(y, y_plain)

    block = model.backbone.layer3[4].snl_block
    norm = block.norm
    saved = {k: v.clone() for k, v in norm.state_dict().items()}
    randomise_norms_(block, seed=2)
    with torch.no_grad():
        y_changed = model(x, mode='tensor')
    assert not torch.allclose(y_changed, y_plain)
    norm.load_state_dict(saved)


def test_init_weights_restores_identity_after_upstream_bn_init(r50_models):
    """mmpretrain's ResNet init sets every BN weight to 1; the block's norm must be zero again after it."""
    model, _ = r50_models
    block = model.backbone.layer3[4].snl_block
    assert torch.count_nonzero(block.norm.weight) == 0
    # with the same upstream weights, a plain backbone computes exactly the same
    from mmpretrain.models import ResNet as PlainResNet
    plain = PlainResNet(depth=50)
    plain.eval()
    upstream = {k: v for k, v in model.backbone.state_dict().items() if '.snl_block.' not in k}
    plain.load_state_dict(upstream, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.backbone(x)[0], plain(x)[0])


def test_parameter_overhead_matches_table6(r50_models):
    """One SNL block before the last residual block of res4 of ResNet-50: 2.62M parameters (Table 6)."""
    model, plain = r50_models
    block = model.backbone.layer3[4].snl_block
    count = sum(p.numel() for p in block.parameters())
    overhead = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    c, cs = 1024, 512
    # theta, phi, g: C -> Cs; w1, w2: Cs -> C (1x1, no bias as the official code); BN weight and bias
    assert count == 5 * c * cs + 2 * c
    assert overhead == count
    print(f'SNL block at layer3.4 of ResNet-50: {count} parameters = {count / 1e6:.2f}M')
    assert round(count / 1e6, 2) == 2.62


@pytest.mark.parametrize('position, expected', [
    ('after_conv1', lambda b, x: torch.relu(b.norm1(b.conv1(x)))),
    ('after_conv2', lambda b, x: torch.relu(b.norm2(b.conv2(torch.relu(b.norm1(b.conv1(x))))))),
    ('after_conv3', lambda b, x: b.norm3(b.conv3(torch.relu(b.norm2(b.conv2(torch.relu(b.norm1(b.conv1(x))))))))),
    ('after_block', lambda b, x: torch.relu(
        b.norm3(b.conv3(torch.relu(b.norm2(b.conv2(torch.relu(b.norm1(b.conv1(x)))))))) + b.downsample(x))),
])
def test_positions_follow_mmdetection(position, expected, randomise_norms_):
    """The block sees exactly the tensor mmdetection's plugin at that position sees."""
    backbone = backbones.ResNet(depth=50, num_stages=1, strides=(1, ), dilations=(1, ), out_indices=(0, ), plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(True, ), blocks=(0, ), position=position)])
    backbone.init_weights()
    randomise_norms_(backbone, seed=3)
    backbone.eval()
    res_block = backbone.layer1[0]
    block = res_block.snl_block
    channels = {'after_conv1': 64, 'after_conv2': 64, 'after_conv3': 256, 'after_block': 256}[position]
    assert block.in_channels == channels
    seen = {}
    block.register_forward_pre_hook(lambda m, args: seen.setdefault('x', args[0].clone()))
    res_block.register_forward_pre_hook(lambda m, args: seen.setdefault('block_in', args[0].clone()))
    with torch.no_grad():
        backbone(torch.randn(1, 3, 64, 64))
        assert torch.equal(seen['x'], expected(res_block, seen['block_in']))


@pytest.mark.parametrize('position', ['after_conv1', 'after_conv2', 'after_block'])
def test_basic_block_positions(position):
    """ResNet-18 (BasicBlock): conv1 and conv2 positions and the block output."""
    backbone = backbones.ResNet(depth=18, plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(False, True, False, False), blocks=(-1, ), position=position)])
    block = backbone.get_submodule(backbone.plugin_paths[0])
    assert backbone.plugin_paths == ['layer2.1.snl_block'] and block.in_channels == 128
    backbone.init_weights()
    with torch.no_grad():
        backbone.eval()
        assert backbone(torch.randn(1, 3, 32, 32))[0].shape == (1, 512, 1, 1)


@pytest.mark.parametrize('cls, upstream, kwargs, entry', [
    ('ResNetV1c', 'ResNetV1c', dict(depth=50), dict(position='after_conv2', stages=(False, True, True, False))),
    ('ResNetV1d', 'ResNetV1d', dict(depth=50), dict(position='after_block', blocks=(0, -1))),
    ('ResNeXt', 'ResNeXt', dict(depth=50, groups=32, width_per_group=4),
     dict(position='after_conv3', stages=(False, False, True, False), blocks=(1, ))),
    ('ResNet_CIFAR', 'ResNet_CIFAR', dict(depth=18), dict(position='after_conv1', blocks=(1, ))),
])
def test_resnet_family(cls, upstream, kwargs, entry, keys_under, randomise_norms_):
    """Every member of the family: upstream keys unchanged and the plain network's output at init."""
    import mmpretrain.models as mmpretrain_models
    entry = dict(cfg=dict(type='SNLBlock', reduction=2), **entry)
    model = getattr(backbones, cls)(**kwargs, plugins=[entry])
    plain = getattr(mmpretrain_models, upstream)(**kwargs)
    plain.init_weights()
    randomise_norms_(plain, seed=4)
    model.init_weights()
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(result.missing_keys) == keys_under(model.state_dict(), model.plugin_paths)
    assert result.unexpected_keys == []
    model.eval(), plain.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[-1], plain(x)[-1])


def test_several_entries_combine_and_postfix():
    from mmpretrain.models import ResNet
    backbone = backbones.ResNet(depth=50, plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False), blocks=(-2, )),
        dict(cfg=dict(type='NLBlock'), stages=(False, True, False, False), position='after_conv2'),
        dict(cfg=dict(type='SNLBlock', postfix='_conv3'), stages=(False, False, True, False), blocks=(-2, ),
             position='after_conv3'),
        # any plugin layer of mmengine's root MODELS, e.g. mmcv's GCNet block
        dict(cfg=dict(type='ContextBlock', ratio=1. / 16), stages=(False, False, False, True), blocks=(0, ),
             position='after_conv3'),
    ])
    assert backbone.plugin_paths == [
        'layer3.4.snl_block', 'layer2.0.nl_block', 'layer2.1.nl_block', 'layer2.2.nl_block',
        'layer2.3.nl_block', 'layer3.4.snl_block_conv3', 'layer4.0.context_block']
    assert backbone.layer4[0].context_block.in_channels == 2048
    assert backbone.get_submodule('layer2.0.nl_block').in_channels == 128
    assert backbone.get_submodule('layer3.4.snl_block_conv3').in_channels == 1024
    backbone.init_weights()
    plain = ResNet(depth=50)
    plain.load_state_dict({k: v for k, v in backbone.state_dict().items() if '_block' not in k})
    backbone.eval()
    plain.eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert torch.equal(backbone(x)[0], plain(x)[0])  # every block, ContextBlock included, the identity


def test_deepcopy_and_sync_bn_conversion_keep_blocks(randomise_norms_):
    """EMA deep copies, pickling and SyncBN conversion keep every block applied (hooks never sit on norms)."""
    import copy
    import pickle

    from mmengine.model import revert_sync_batchnorm

    backbone = backbones.ResNet(depth=50, num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(1, ), plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(False, True), blocks=(1, ), position='after_conv1'),
        dict(cfg=dict(type='SNLBlock', postfix=2), stages=(False, True), blocks=(1, ), position='after_conv2'),
        dict(cfg=dict(type='NLBlock'), stages=(False, True), blocks=(1, ), position='after_conv3'),
        dict(cfg=dict(type='NSBlock'), stages=(False, True), blocks=(1, ))])
    randomise_norms_(backbone, seed=5)
    backbone.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y = backbone(x)[0]
        twin = copy.deepcopy(backbone)
        assert torch.equal(twin(x)[0], y)
        assert torch.equal(pickle.loads(pickle.dumps(backbone))(x)[0], y)
        # the copy runs its own blocks: changing them changes the copy only
        randomise_norms_(twin.layer2[1].nl_block, seed=6)
        assert not torch.equal(twin(x)[0], y)
        assert torch.equal(backbone(x)[0], y)

        synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(backbone))
        assert isinstance(synced.layer2[1].snl_block.norm, nn.SyncBatchNorm)
        reverted = revert_sync_batchnorm(synced)
        reverted.eval()
        assert torch.equal(reverted(x)[0], y)
