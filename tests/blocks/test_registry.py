"""The six blocks (and the graph block) in mmengine's root MODELS: built from the root, from the scopes of
mmpretrain, mmaction2, mmsegmentation and mmdetection, and as mmcv plugin layers."""
import importlib.util

import pytest
import torch
from mmcv.cnn import build_plugin_layer
from mmengine.registry import DefaultScope

import snl_mm  # noqa: F401 (registers the blocks, applies the compat fixes)
from snl_mm.blocks.base import NonlocalBase
from snl_mm.registry import ROOT_MODELS

from snl_mm.blocks import BLOCK_NAMES as BLOCKS  # noqa: E402
ALL = BLOCKS + ('GraphNonlocalBlock', )


def _check(block, name):
    assert type(block).__name__ == name
    assert isinstance(block, NonlocalBase)
    assert block.in_channels == 16
    x = torch.randn(2, 16, 3, 4)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize('name', ALL)
def test_root_registry(name):
    assert name in ROOT_MODELS.module_dict, f'{name} is not registered in mmengine\'s root MODELS'
    _check(ROOT_MODELS.build(dict(type=name, in_channels=16)), name)


def _scoped_build(scope: str, registry_module: str, name: str):
    registry = importlib.import_module(registry_module).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(dict(type=name, in_channels=16))


@pytest.mark.parametrize('name', BLOCKS)
def test_mmpretrain_scope(name):
    _check(_scoped_build('mmpretrain', 'mmpretrain.registry', name), name)


@pytest.mark.parametrize('name', BLOCKS)
def test_mmaction_scope(name):
    _check(_scoped_build('mmaction', 'mmaction.registry', name), name)


@pytest.mark.parametrize('name', BLOCKS)
def test_mmseg_scope(name):
    from snl_mm.utils import mmseg_available
    if not mmseg_available():
        pytest.skip('mmsegmentation cannot load its models without compiled mmcv ops (mmcv-lite installed)')
    _check(_scoped_build('mmseg', 'mmseg.registry', name), name)


@pytest.mark.parametrize('name', BLOCKS)
def test_mmdet_scope(name):
    # mmdetection is part of the `tests` extra: its absence is a broken installation, not a reason to skip
    _check(_scoped_build('mmdet', 'mmdet.registry', name), name)


@pytest.mark.parametrize('name', ALL)
def test_mmcv_plugin_layer(name):
    layer_name, block = build_plugin_layer(dict(type=name), in_channels=16)
    cls = ROOT_MODELS.get(name)
    assert isinstance(block, cls)
    assert '_abbr_' in vars(cls), f'{name} has no _abbr_ of its own'
    assert layer_name == cls._abbr_
    _check(block, name)
    layer_name, _ = build_plugin_layer(dict(type=name, reduction=4), postfix=2, in_channels=16)
    assert layer_name == cls._abbr_ + '2'


def test_abbreviations_are_distinct():
    abbrs = [ROOT_MODELS.get(name)._abbr_ for name in ALL]
    assert len(set(abbrs)) == len(abbrs), abbrs


def test_unknown_block_is_a_key_error():
    with pytest.raises(KeyError, match='SNLBlok'):
        ROOT_MODELS.build(dict(type='SNLBlok', in_channels=16))
