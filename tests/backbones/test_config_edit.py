"""The README's edit, ``model = dict(backbone=dict(plugins=[...]))``, on the toolboxes' own configs: the backbone
keeps its class and every other argument, and video backbones hand their blocks the clip."""
import copy

import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import MODELS, init_default_scope

from snl_mm.blocks import find_blocks
from tests.helpers import random_input, randomise_norms_

SNL = dict(type='SNLBlock', inner_channels=8)
RES4 = dict(cfg=SNL, stages=(False, False, True, False), blocks=(-2, ))


def _model(config: str, scope: str, entries=None, **backbone):
    """The recognizer / classifier of a shipped config, with ``plugins`` added as a user's config would."""
    init_default_scope(scope)
    cfg = copy.deepcopy(get_config(f'{scope}::{config}').model)
    cfg.backbone.pop('init_cfg', None)
    if 'pretrained' in cfg.backbone:
        cfg.backbone.pretrained = None
    cfg.backbone.update(backbone)
    if entries is not None:
        cfg.backbone.plugins = entries
    return MODELS.build(cfg)


def _block_inputs(model) -> list:
    (path, block), = find_blocks(model).items()
    seen = []
    block.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    return seen


def test_cifar_resnet_keeps_its_stem():
    """mmpretrain's ResNet_CIFAR (3x3 stem, no max-pool) stays ResNet_CIFAR, with the same upstream weights and
    outputs at init."""
    plain = _model('resnet/resnet18_8xb16_cifar10.py', 'mmpretrain')
    model = _model('resnet/resnet18_8xb16_cifar10.py', 'mmpretrain', [RES4])
    assert type(model.backbone) is type(plain.backbone)
    assert type(model.backbone).__name__ == 'ResNet_CIFAR' and model.backbone.conv1.kernel_size == (3, 3)
    block_params = sum(p.numel() for p in find_blocks(model)['backbone.layer3.0.snl_block'].parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters()) + block_params
    randomise_norms_(plain, seed=0)
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith('backbone.layer3.0.snl_block.') for k in result.missing_keys)
    model.eval()
    plain.eval()
    x = random_input((2, 3, 32, 32))
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), plain(x, mode='tensor'))


def test_r2plus1d_keeps_its_temporal_size():
    plain = _model('recognition/r2plus1d/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb.py', 'mmaction')
    model = _model('recognition/r2plus1d/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb.py', 'mmaction', [RES4])
    assert type(model.backbone) is type(plain.backbone) and type(plain.backbone).__name__ == 'ResNet2Plus1d'
    x = random_input((1, 3, 8, 32, 32))
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert model.backbone(x).shape == plain.backbone(x).shape  # (1, 512, 1, 1, 1): T 8 -> 1, as upstream


@pytest.mark.parametrize('config, backbone_type', [
    ('recognition/slowonly/slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb.py', 'ResNet3dSlowOnly'),
    ('recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py', 'ResNet3d'),
])
def test_3d_backbones_keep_their_class(config, backbone_type):
    model = _model(config, 'mmaction', [RES4])
    assert type(model.backbone).__name__ == backbone_type
    assert model.backbone.plugin_paths == ['layer3.4.snl_block']


def test_tsm_blocks_see_clips_of_num_segments():
    model = _model('recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py', 'mmaction',
                   [RES4])
    seen = _block_inputs(model)
    model.eval()
    with torch.no_grad():
        model(random_input((2, 8, 3, 64, 64)), mode='tensor')  # 2 videos of 8 segments
    assert seen == [(2, 1024, 8, 4, 4)]  # (N, C, T, H, W): the clip of each video


def test_tsn_blocks_see_the_recognizers_segments():
    """TSN's backbone is a plain 2-D ResNet: the clip length is the recognizer's input's (3 at training, 25 at
    testing in the shipped config), recorded when the recognizer runs."""
    model = _model('recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py', 'mmaction',
                   [RES4])
    seen = _block_inputs(model)
    model.eval()
    with torch.no_grad():
        model(random_input((2, 3, 3, 64, 64)), mode='tensor')
        model(random_input((1, 5, 3, 64, 64)), mode='tensor')
    assert seen == [(2, 1024, 3, 4, 4), (1, 1024, 5, 4, 4)]


def test_explicit_frames_layout_overrides():
    model = _model('recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py', 'mmaction',
                   [dict(RES4, layout=dict(type='frames', num_segments=4))])
    seen = _block_inputs(model)
    model.eval()
    with torch.no_grad():
        model(random_input((1, 8, 3, 64, 64)), mode='tensor')
    assert seen == [(2, 1024, 4, 4, 4)]
    with pytest.raises(ValueError, match=r"plugins\[0\].*layout frames.*T=3"):
        _model('recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py', 'mmaction',
               [dict(RES4, layout=dict(type='frames', num_segments=3))])


@pytest.mark.parametrize('pathway', ['slow_path', 'fast_path'])
def test_slowfast_pathways(pathway):
    model = _model('recognition/slowfast/slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py', 'mmaction',
                   [dict(RES4, within=pathway)])
    assert model.backbone.plugin_paths == [f'{pathway}.layer3.4.snl_block']
    seen = _block_inputs(model)
    model.eval()
    with torch.no_grad():
        model.backbone(random_input((1, 3, 32, 64, 64)))
    assert len(seen) == 1 and seen[0][2] == {'slow_path': 4, 'fast_path': 32}[pathway]
