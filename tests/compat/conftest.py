"""Fixtures for the compatibility-layer tests."""
import pytest

#: mmaction2's own I3D config, shipped inside the mmaction2 package.
I3D_CONFIG = 'mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py'


@pytest.fixture(scope='session')
def i3d_config():
    """mmaction2's shipped I3D ResNet-50 config, with its ImageNet URL removed (no network here)."""
    from mmengine.hub import get_config

    cfg = get_config(I3D_CONFIG)
    assert cfg.model.backbone.pretrained == 'torchvision://resnet50'
    cfg.model.backbone.pretrained = None
    return cfg
