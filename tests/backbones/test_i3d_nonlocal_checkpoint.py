"""mmaction2's I3D non-local checkpoints load strictly into blocks inserted by config, named as mmaction2 names them
(``non_local_block``), and compute what mmaction2's model computes."""
import copy

import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import MODELS, init_default_scope

from tests.helpers import randomise_, randomise_norms_, rel_err

NL_CONFIG = 'mmaction::recognition/i3d/i3d_imagenet-pretrained-r50-nl-{mode}_8xb8-32x2x1-100e_kinetics400-rgb.py'
MODES = {'dot-product': 'dot_product', 'embedded-gaussian': 'embedded_gaussian', 'gaussian': 'gaussian'}


def _upstream_and_entry(mode: str):
    """mmaction2's I3D-NL backbone, and the same network as the plain I3D plus one plugin entry."""
    cfg = get_config(NL_CONFIG.format(mode=mode)).model.backbone
    cfg.pretrained = None
    upstream = copy.deepcopy(cfg)
    nl = dict(cfg.non_local_cfg)
    stages = tuple(any(s) for s in cfg.non_local)
    blocks = tuple(tuple(i for i, on in enumerate(s) if on) for s in cfg.non_local)
    plain = copy.deepcopy(cfg)
    del plain['non_local'], plain['non_local_cfg']
    entry = dict(cfg=dict(type='NLBlock', sub_sample=nl['sub_sample'], use_scale=nl['use_scale'],
                          mode=nl['mode'], norm_cfg=nl['norm_cfg']),
                 stages=stages, blocks=blocks, name='non_local_block')
    return upstream, plain, entry


@pytest.mark.parametrize('mode', list(MODES))
def test_i3d_nonlocal_state_dict_loads_strictly(mode):
    init_default_scope('mmaction')
    upstream_cfg, plain_cfg, entry = _upstream_and_entry(mode)
    upstream = MODELS.build(upstream_cfg)
    model = MODELS.build(dict(plain_cfg, plugins=[entry]))
    assert type(model) is type(upstream)  # mmaction2's own ResNet3d: the entry changes no argument
    assert model.plugin_paths == ['layer2.1.non_local_block', 'layer2.3.non_local_block',
                                  'layer3.1.non_local_block', 'layer3.3.non_local_block',
                                  'layer3.5.non_local_block']
    randomise_norms_(upstream, seed=3)
    for name, module in upstream.named_modules():
        if name.endswith('non_local_block'):  # non-identity blocks, so that their weights matter
            randomise_(module, std=0.01, seed=len(name))
    result = model.load_state_dict(upstream.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    model.eval()
    upstream.eval()
    x = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel_err(model(x), upstream(x)) < 1e-5  # float32 "the same numbers" (fused softmax vs mmcv's)


def test_the_registered_resnet3d_takes_the_same_entry():
    """``snl_mm.ResNet3d`` (a class with ``plugins=`` of its own) gives the same keys as the config path."""
    init_default_scope('mmaction')
    upstream_cfg, plain_cfg, entry = _upstream_and_entry('embedded-gaussian')
    upstream = MODELS.build(upstream_cfg)
    model = MODELS.build(dict(plain_cfg, type='snl_mm.ResNet3d', plugins=[entry]))
    assert set(model.state_dict()) == set(upstream.state_dict())
