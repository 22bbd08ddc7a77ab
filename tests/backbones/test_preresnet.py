"""PreResNet: the paper's CIFAR backbone, its layout and the ablation placements of Sec. 3.1 (Tables 3-4)."""
import pytest
import torch
from mmengine.registry import init_default_scope

import snl_mm.backbones as backbones
from snl_mm.backbones import PreActBasicBlock, PreActBottleneck, PreResNet

ONE_BLOCK = [dict(cfg=dict(type='SNLBlock', reduction=2), stages=(True, False, False), blocks=(1, ))]
THREE_BLOCKS = [dict(cfg=dict(type='SNLBlock', reduction=2), stages=(True, True, True), blocks=(1, ))]


@pytest.mark.parametrize('depth, block, layout, widths', [
    (20, PreActBasicBlock, (3, 3, 3), (16, 32, 64)),
    (56, PreActBottleneck, (9, 9, 9), (64, 128, 256)),
    (110, PreActBottleneck, (18, 18, 18), (64, 128, 256)),
])
def test_layout(depth, block, layout, widths):
    model = PreResNet(depth=depth)
    assert tuple(len(getattr(model, name)) for name in model.res_layers) == layout
    assert all(type(m) is block for name in model.res_layers for m in getattr(model, name))
    assert tuple(getattr(model, name)[-1].out_channels for name in model.res_layers) == widths
    assert tuple(getattr(model, name)[0].mid_channels for name in model.res_layers) == (16, 32, 64)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.feat_dim == widths[-1]
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape for o in outs] == [(1, widths[-1], 8, 8)]
    assert (outs[0] >= 0).all()  # final norm + ReLU


def _count_by_hand(depth: int) -> int:
    """Parameters of the plain PreResNet, from its definition: stem, units, projections, final norm."""
    bottleneck = depth != 20
    per_stage = {20: 3, 56: 9, 110: 18}[depth]
    total = 3 * 16 * 9  # 3x3 stem
    c_in = 16
    for mid in (16, 32, 64):
        out = 4 * mid if bottleneck else mid
        for i in range(per_stage):
            c = c_in if i == 0 else out
            if bottleneck:  # bn1, 1x1, bn2, 3x3, bn3, 1x1
                total += 2 * c + c * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * out
            else:  # bn1, 3x3, bn2, 3x3
                total += 2 * c + 9 * c * mid + 2 * mid + 9 * mid * out
            if i == 0 and (c != out or mid != 16):  # width changes, or stages 2 and 3 stride by 2
                total += c * out  # 1x1 projection shortcut
        c_in = out
    return total + 2 * c_in  # final norm


@pytest.mark.parametrize('depth', [20, 56, 110])
def test_plain_parameter_count(depth):
    """The plain network's size (printed; PreResNet-56 is the ablations' backbone)."""
    backbone = PreResNet(depth=depth)
    count = sum(p.numel() for p in backbone.parameters())
    head = backbone.feat_dim * 100 + 100  # the CIFAR-100 linear classifier
    print(f'PreResNet-{depth}: backbone {count} parameters, {count + head} with a 100-class linear head')
    assert count == _count_by_hand(depth)


@pytest.mark.parametrize('entries, paths', [
    (ONE_BLOCK, ['layer1.1.snl_block']),
    (THREE_BLOCKS, ['layer1.1.snl_block', 'layer2.1.snl_block', 'layer3.1.snl_block']),
])
def test_ablation_placements_in_image_classifier(entries, paths, keys_under, randomise_norms_):
    from mmpretrain.registry import MODELS

    init_default_scope('mmpretrain')
    head = dict(type='LinearClsHead', num_classes=100, in_channels=256, loss=dict(type='CrossEntropyLoss'))
    backbone = dict(type='snl_mm.PreResNet', depth=56, plugins=entries)
    model = MODELS.build(dict(type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
                              head=head))
    plain = MODELS.build(dict(type='ImageClassifier', backbone=dict(type='snl_mm.PreResNet', depth=56),
                              neck=dict(type='GlobalAveragePooling'), head=head))
    model.init_weights()
    plain.init_weights()
    backbone = model.backbone
    assert backbone.plugin_paths == paths
    # right after the second residual unit of each chosen stage: between units 1 and 2
    for path, channels in zip(paths, (64, 128, 256)):
        block = backbone.get_submodule(path)
        assert block.in_channels == channels and block.inner_channels == channels // 2
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    print(f'{len(paths)} SNL block(s) in PreResNet-56: +{extra} parameters')

    randomise_norms_(plain, seed=0)
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(result.missing_keys) == keys_under(model.state_dict(), [f'backbone.{p}' for p in paths])
    assert result.unexpected_keys == []
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), plain(x, mode='tensor'))

    # forward/backward on (2, 3, 32, 32) through the classifier's loss
    from mmpretrain.structures import DataSample
    model.train()
    samples = [DataSample().set_gt_label(3), DataSample().set_gt_label(7)]
    loss = model(x, samples, mode='loss')['loss']
    loss.backward()
    assert torch.isfinite(loss)
    for path in paths:
        grads = [p.grad for p in backbone.get_submodule(path).parameters()]
        assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads), path


def test_positions_and_basic_block():
    model = PreResNet(depth=20, plugins=[
        dict(cfg=dict(type='NLBlock'), stages=(False, True, False), blocks=(0, ), position='after_conv1'),
        dict(cfg=dict(type='SNLBlock'), stages=(False, False, True), blocks=(-1, ), position='after_conv2')])
    assert model.plugin_paths == ['layer2.0.nl_block', 'layer3.2.snl_block']
    assert model.layer2[0].nl_block.in_channels == 32
    model.init_weights()
    seen = {}
    model.layer2[0].nl_block.register_forward_pre_hook(lambda m, a: seen.setdefault('x', a[0].clone()))
    model.layer2[0].register_forward_pre_hook(lambda m, a: seen.setdefault('in', a[0].clone()))
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        unit = model.layer2[0]
        assert torch.equal(seen['x'], unit.conv1(torch.relu(unit.norm1(seen['in']))))
    with pytest.raises(ValueError, match="'position'.*'after_conv3'.*PreActBasicBlock"):
        PreResNet(depth=20, plugins=[dict(cfg=dict(type='SNLBlock'), position='after_conv3')])


def test_out_indices_frozen_stages_norm_eval():
    model = PreResNet(depth=20, out_indices=(0, 1, -1), frozen_stages=1, norm_eval=True,
                      plugins=[dict(cfg=dict(type='SNLBlock'), stages=(True, True, False), blocks=(1, ))])
    model.init_weights()
    model.train()
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape[1:] for o in outs] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    frozen, free = model.layer1[1].snl_block, model.layer2[1].snl_block
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
    assert all(p.requires_grad for p in free.parameters())
    assert not any(p.requires_grad for p in model.conv1.parameters())
    # norm_eval: every BN, the blocks' own included, keeps its running statistics
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(KeyError, match='valid depths'):
        PreResNet(depth=32)


def test_registered_in_scope():
    from snl_mm.registry import MODELS
    assert MODELS.get('PreResNet') is PreResNet
    assert backbones.PreResNet is PreResNet
