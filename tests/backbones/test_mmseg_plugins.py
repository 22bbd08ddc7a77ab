"""The blocks in a backbone that already has ``plugins=`` (mmsegmentation's ResNet, mmdetection's design).

mmsegmentation needs compiled ``mmcv.ops``; without them these tests are skipped with the reason.
"""
import pytest
import torch

from snl_mm.backbones import ResNet
from snl_mm.blocks import BLOCK_NAMES as SIX_BLOCKS
from snl_mm.plugins import UnknownPluginError
from snl_mm.utils import mmseg_available
SKIP_REASON = ('mmsegmentation cannot load here: `import mmseg.models` needs mmcv\'s compiled ops (mmcv._ext), '
               'which mmcv-lite lacks; build mmcv with tools/build_mmcv.sh')


@pytest.fixture
def mmseg_models():
    """mmsegmentation's MODELS, with its scope as the default one (other tests set theirs)."""
    if not mmseg_available():
        pytest.skip(SKIP_REASON)
    import mmseg.models  # noqa: F401 (registers mmseg's backbones)
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    return MODELS


@pytest.mark.parametrize('block_type', SIX_BLOCKS)
def test_blocks_in_mmseg_resnetv1c(block_type, mmseg_models, keys_under, randomise_norms_):
    # mmseg's ResNetV1c as its decode-head configs use it (dilated res4/res5, output stride 8)
    common = dict(type='ResNetV1c', depth=50, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                  strides=(1, 2, 1, 1), norm_cfg=dict(type='BN', requires_grad=True), contract_dilation=True)
    plugins = [dict(cfg=dict(type=block_type), stages=(False, False, False, True), position='after_conv3')]
    model = mmseg_models.build(dict(common, plugins=plugins))
    plain = mmseg_models.build(common)
    model.init_weights()
    plain.init_weights()
    randomise_norms_(plain, seed=0)
    result = model.load_state_dict(plain.state_dict(), strict=False)
    names = list(model.layer4[0].after_conv3_plugin_names)
    assert len(names) == 1
    paths = [f'layer4.{i}.{names[0]}' for i in range(3)]
    assert sorted(result.missing_keys) == keys_under(model.state_dict(), paths)
    assert result.unexpected_keys == []
    assert type(model.get_submodule(paths[0])).__name__ == block_type
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), plain(x)))
    model.train()
    sum(o.mean() for o in model(x)).backward()
    assert all(p.grad is not None for p in model.get_submodule(paths[0]).parameters())


@pytest.mark.parametrize('position', ['after_conv1', 'after_conv2', 'after_conv3'])
def test_positions_equal_mmdetection_design(position, mmseg_models, randomise_norms_):
    """mmseg's ResNet-50 with plugins and snl_mm.ResNet with the same entry share every key and output."""
    entry = dict(cfg=dict(type='SNLBlock'), stages=(False, True, False, False), position=position)
    theirs = mmseg_models.build(dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), plugins=[entry]))
    ours = ResNet(depth=50, out_indices=(0, 1, 2, 3), plugins=[dict(entry, blocks=None)])
    randomise_norms_(theirs, seed=1)  # the blocks too: they are not the identity here
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.eval()
    ours.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(theirs(x), ours(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('entry, error, patterns', [
    (dict(cfg=dict(type='SNLBlok'), stages=(False, False, True, False), position='after_conv2'), UnknownPluginError,
     [r'plugins\[0\]', "'cfg.type'", "'SNLBlok'", r"did you mean \['SNLBlock'"]),
    (dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False), position='after_block'), ValueError,
     [r'plugins\[0\]', "'position' is 'after_block'", 'mmseg ResNetV1c',
      r"\('after_conv1', 'after_conv2', 'after_conv3'\)"]),
    (dict(cfg=dict(type='SNLBlock'), stages=(False, True), position='after_conv2'), ValueError,
     [r'plugins\[0\]', "'stages' must be 4 bools"]),
    (dict(cfg=dict(type='SNLBlock'), blocks=(1, ), position='after_conv2'), ValueError,
     [r'plugins\[0\]', r"unknown field\(s\) \['blocks'\]", 'snl_mm.PluginBackbone']),
])
def test_mmseg_own_plugins_are_checked(entry, error, patterns, mmseg_models):
    """mmseg's ResNet answers these with a bare AssertionError or "Cannot find None in registry"."""
    with pytest.raises(error) as info:
        mmseg_models.build(dict(type='ResNetV1c', depth=50, plugins=[entry]))
    for pattern in patterns:
        assert info.match(pattern), (pattern, str(info.value))


def test_mmseg_resnet18_takes_no_plugins(mmseg_models):
    with pytest.raises(ValueError, match=r'mmseg ResNetV1c\(depth=18\) takes no plugins'):
        mmseg_models.build(dict(type='ResNetV1c', depth=18, plugins=[
            dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False), position='after_conv2')]))
