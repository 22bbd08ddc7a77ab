"""The blocks in a backbone that already has ``plugins=`` (mmsegmentation's and mmdetection's ResNets).

Entries in upstream's own form go to upstream untouched: every form the toolboxes' own test suites use builds the
same network through a config as with the class alone, and what upstream refuses fails with upstream's exception
type and a message naming the field. Entries with the package's fields (``blocks``, ``after``, ``name``,
``layout``, ``position='after_block'``) are inserted by the package in the same backbone. Both toolboxes need
compiled ``mmcv.ops``; without them these tests are skipped with the reason.
"""
import importlib

import pytest
import torch
from mmengine.registry import MODELS, init_default_scope

from snl_mm.backbones import ResNet
from snl_mm.blocks import BLOCK_NAMES as SIX_BLOCKS
from snl_mm.plugins import UnknownPluginError
from snl_mm.utils import mmseg_available
from tests.helpers import random_input

SKIP_REASON = ('mmsegmentation cannot load here: `import mmseg.models` needs mmcv\'s compiled ops (mmcv._ext), '
               'which mmcv-lite lacks; build mmcv with tools/build_mmcv.sh')
CONTEXT = dict(type='ContextBlock', ratio=1. / 16)
GEN_ATTENTION = dict(type='GeneralizedAttention', spatial_range=-1, num_heads=8, attention_type='0010', kv_stride=2)
#: the plugin entries of mmdetection's and mmsegmentation's own ResNet tests (tests/test_models/test_backbones)
UPSTREAM_FORMS = {
    'three-plugins': [dict(cfg=GEN_ATTENTION, stages=(False, True, True, True), position='after_conv2'),
                      dict(cfg=dict(type='NonLocal2d'), position='after_conv2'),
                      dict(cfg=CONTEXT, stages=(False, True, True, False), position='after_conv3')],
    'postfixes': [dict(cfg=dict(CONTEXT, postfix=1), stages=(False, True, True, False), position='after_conv3'),
                  dict(cfg=dict(CONTEXT, postfix=2), stages=(False, True, True, False), position='after_conv3')],
    'int-stages': [dict(cfg=dict(type='SNLBlock'), stages=(0, 1, 1, 1), position='after_conv2')],
}
UPSTREAM_ERRORS = {
    'stages-length': (dict(depth=50), [dict(cfg=CONTEXT, stages=(False, True, True), position='after_conv3')],
                      AssertionError, r"plugins\[0\]: field 'stages' has 3 entries but \w+ ResNet has 4 stages"),
    'position': (dict(depth=50), [dict(cfg=CONTEXT, position='after_conv4')], AssertionError,
                 r"plugins\[0\]: field 'position' is 'after_conv4', which \w+ ResNet does not offer; valid positions: "
                 r"\('after_conv1', 'after_conv2', 'after_conv3'\)"),
    'type': (dict(depth=50), [dict(cfg=dict(type='WrongPlugin'), position='after_conv3')], KeyError,
             r"plugins\[0\]: field 'cfg.type' names an unknown block 'WrongPlugin'"),
    'duplicate': (dict(depth=50), [dict(cfg=CONTEXT, position='after_conv3')] * 2, AssertionError, None),
    'basic-block': (dict(depth=18), [dict(cfg=CONTEXT, position='after_conv2')], AssertionError,
                    r'plugins\[0\]: \w+ ResNet takes no plugins of its own at this depth'),
}


@pytest.fixture(params=['mmseg', 'mmdet'])
def toolbox(request):
    """``(scope, the toolbox's backbones module)``, with its scope as the default one."""
    if not mmseg_available():
        pytest.skip(SKIP_REASON)
    importlib.import_module(f'{request.param}.models')
    init_default_scope(request.param)
    return request.param, importlib.import_module(f'{request.param}.models.backbones')


def _same_network(a, b, x) -> None:
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    with torch.no_grad():
        for ya, yb in zip(a(x), b(x)):
            torch.testing.assert_close(ya, yb, rtol=0, atol=0)


@pytest.mark.parametrize('form', list(UPSTREAM_FORMS))
def test_upstream_forms_build_as_upstream(form, toolbox):
    """Through a config (the package's registry wrapper) as with the class itself: same keys, same outputs."""
    scope, backbones = toolbox
    kwargs = dict(depth=50, base_channels=8, plugins=UPSTREAM_FORMS[form])
    _same_network(MODELS.build(dict(type='ResNet', **kwargs)), backbones.ResNet(**kwargs), random_input((1, 3, 32, 32)))


@pytest.mark.parametrize('case', list(UPSTREAM_ERRORS))
def test_upstream_errors_keep_their_type(case, toolbox):
    """What upstream refuses is refused through a config with the same exception type, and a message naming the
    entry and the field where the package adds one."""
    scope, backbones = toolbox
    kwargs, plugins, error, message = UPSTREAM_ERRORS[case]
    with pytest.raises(error):
        backbones.ResNet(**kwargs, plugins=plugins)
    with pytest.raises(error, match=message):
        MODELS.build(dict(type='ResNet', **kwargs, plugins=plugins))


@pytest.mark.parametrize('toolbox', ['mmseg'], indirect=True)
@pytest.mark.parametrize('block_type', SIX_BLOCKS)
def test_blocks_in_mmseg_resnetv1c(block_type, toolbox, keys_under, randomise_norms_):
    # mmseg's ResNetV1c as its decode-head configs use it (dilated res4/res5, output stride 8)
    common = dict(type='ResNetV1c', depth=50, base_channels=16, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                  strides=(1, 2, 1, 1), norm_cfg=dict(type='BN', requires_grad=True), contract_dilation=True)
    plugins = [dict(cfg=dict(type=block_type), stages=(False, False, False, True), position='after_conv3')]
    model = MODELS.build(dict(common, plugins=plugins))
    plain = MODELS.build(common)
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
def test_positions_equal_mmdetection_design(position, toolbox, randomise_norms_):
    """The toolbox's ResNet-50 with plugins and snl_mm.ResNet with the same entry share every key and output."""
    entry = dict(cfg=dict(type='SNLBlock'), stages=(False, True, False, False), position=position)
    theirs = MODELS.build(dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), plugins=[entry]))
    ours = ResNet(depth=50, out_indices=(0, 1, 2, 3), plugins=[dict(entry, blocks=None)])
    randomise_norms_(theirs, seed=1)  # the blocks too: they are not the identity here
    ours.load_state_dict(theirs.state_dict(), strict=True)
    _same_network(theirs, ours, torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize('entry, path', [
    (dict(stages=(False, False, True, False), blocks=(-2, )), 'layer3.4.snl_block'),  # the paper's placement
    (dict(after='layer3'), 'layer3.5.snl_block'),
    (dict(stages=(False, False, True, False), blocks=(4, ), position='after_conv1', name='non_local_block'),
     'layer3.4.non_local_block'),
    (dict(after='layer3.4', layout='map'), 'layer3.4.snl_block'),
])
def test_package_fields_on_their_resnet(entry, path, toolbox, keys_under, randomise_norms_):
    """The package's fields on the toolbox's own ResNet (the class and its keys kept): the block where the entry
    says, with only its keys added, the plain network's outputs at init, another output once it is not the
    identity."""
    scope, _ = toolbox
    common = dict(type=dict(mmseg='ResNetV1c', mmdet='ResNet')[scope], depth=50, base_channels=16, out_indices=(2, ))
    model = MODELS.build(dict(common, plugins=[dict(cfg=dict(type='SNLBlock', reduction=2), **entry)]))
    plain = MODELS.build(common)
    assert type(model) is type(plain) and model.plugin_paths == [path]
    model.init_weights()
    plain.init_weights()
    randomise_norms_(plain, seed=2)
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(result.missing_keys) == keys_under(model.state_dict(), [path]) and not result.unexpected_keys
    x = random_input((1, 3, 64, 64))
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], plain(x)[0])
        randomise_norms_(model.get_submodule(path), seed=3)
        assert not torch.equal(model(x)[0], plain(x)[0])


def test_both_forms_in_one_config(toolbox):
    """Upstream's entries and the package's side by side; errors name the index in the config's list."""
    scope, _ = toolbox
    snl = dict(type='SNLBlock')
    model = MODELS.build(dict(type='ResNet', depth=50, base_channels=16, plugins=[
        dict(cfg=CONTEXT, stages=(False, False, True, False), position='after_conv3'),
        dict(cfg=snl, stages=(False, False, True, False), blocks=(-2, ))]))
    assert model.plugin_paths == ['layer3.4.snl_block']
    assert [name for name, _ in model.layer3[0].named_children() if 'context' in name] == ['context_block']
    with pytest.raises(ValueError, match=r"plugins\[1\]: field 'blocks' index 9 is out of range"):
        MODELS.build(dict(type='ResNet', depth=50, base_channels=16, plugins=[
            dict(cfg=CONTEXT, position='after_conv3'), dict(cfg=snl, blocks=(9, ))]))
    with pytest.raises(UnknownPluginError, match=r"plugins\[0\]: field 'cfg.type'.*'SNLBlok'"):
        MODELS.build(dict(type='ResNet', depth=50, plugins=[dict(cfg=dict(type='SNLBlok'), after='layer3')]))


def test_basic_block_depth_takes_the_package_fields(toolbox):
    """ResNet-18 has no plugins of its own; after its residual blocks the package puts them."""
    model = MODELS.build(dict(type='ResNet', depth=18, plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False), blocks=(-1, ), position='after_block')]))
    assert model.plugin_paths == ['layer3.1.snl_block'] and model.layer3[1].snl_block.in_channels == 256
