"""Every wrong plugin entry stops the build with one message naming the entry, the field and the choices."""
import pytest
import torch
import torch.nn as nn

from snl_mm.backbones import PluginBackbone, PreResNet, ResNet
from snl_mm.blocks import BLOCK_NAMES
from snl_mm.plugins import UnknownPluginError, insert
from snl_mm.registry import MODELS

SNL = dict(type='SNLBlock', reduction=2)


def resnet18(*entries):
    return ResNet(depth=18, plugins=list(entries))


@pytest.mark.parametrize('entry, error, patterns', [
    # unknown block type: the registered blocks are listed
    (dict(cfg=dict(type='SNLBlok')), UnknownPluginError,
     [r'plugins\[0\]', r"'cfg.type'", "'SNLBlok'", r"did you mean \['SNLBlock'", 'Registered blocks: ']
     + [f"'{name}'" for name in BLOCK_NAMES]),
    # in_channels comes from the build-time check; a given one must agree
    (dict(cfg=dict(type='SNLBlock', in_channels=256)), ValueError,
     [r'plugins\[0\]', "'cfg' gives in_channels=256", r'layer1\.0 \(after_block\) receives 64 channels']),
    # unknown position
    (dict(cfg=SNL, position='before_block'), ValueError,
     [r'plugins\[0\]', "'position'", "'before_block'",
      r"\('after_block', 'after_conv1', 'after_conv2', 'after_conv3'\)"]),
    # a position the residual block lacks (BasicBlock has two convolutions)
    (dict(cfg=SNL, position='after_conv3'), ValueError,
     [r'plugins\[0\]', "'position'", "'after_conv3'", 'BasicBlock',
      r"offers \('after_conv1', 'after_conv2', 'after_block'\)"]),
    # stage out of range: one bool per stage
    (dict(cfg=SNL, stages=(False, False, True, False, True)), ValueError,
     [r'plugins\[0\]', "'stages'", '5 entries', '4 stages', r"\('layer1', 'layer2', 'layer3', 'layer4'\)"]),
    (dict(cfg=SNL, stages=(False, ) * 4), ValueError, [r'plugins\[0\]', "'stages' selects no stage"]),
    (dict(cfg=SNL, stages=(0, 0, 1, 0)), TypeError, [r'plugins\[0\]', "'stages'", 'bools']),
    # block index out of range (ResNet-18: two blocks per stage)
    (dict(cfg=SNL, stages=(False, False, True, False), blocks=(2, )), ValueError,
     [r'plugins\[0\]', "'blocks'", 'index 2', 'stage 2', 'layer3', 'with 2 residual blocks',
      r'valid indices: -2\.\.1']),
    (dict(cfg=SNL, stages=(False, False, True, False), blocks=(-3, )), ValueError,
     [r'plugins\[0\]', "'blocks'", 'index -3']),
    (dict(cfg=SNL, blocks=((0, ), (1, ))), ValueError,
     [r'plugins\[0\]', "'blocks'", '2 per-stage tuples', '4 stages']),
    (dict(cfg=SNL, stages=(False, True, False, False), blocks=((), (0, ), (1, ), ())), ValueError,
     [r'plugins\[0\]', "'blocks'", 'stage 2', "'stages' leaves that stage out"]),
    (dict(cfg=SNL, blocks=(0, 1, 0, 1)), ValueError,
     [r'plugins\[0\]', "'blocks'", 'twice', r'blocks=\(1, 3\)']),
    (dict(cfg=SNL, blocks='all'), TypeError, [r'plugins\[0\]', "'blocks'", 'None']),
    # unknown field, missing cfg, a cfg that is not a config
    (dict(cfg=SNL, stage=(True, )), ValueError,
     [r'plugins\[0\]', r"unknown field\(s\) \['stage'\]", r"\('cfg', 'stages', 'position', 'blocks'\)"]),
    (dict(position='after_block'), ValueError, [r'plugins\[0\]', "'cfg' is required"]),
    (dict(cfg='SNLBlock'), TypeError, [r'plugins\[0\]', "'cfg' must be a dict with a 'type'"]),
])
def test_entry_errors(entry, error, patterns):
    with pytest.raises(error) as info:
        resnet18(entry)
    for pattern in patterns:
        assert info.match(pattern), (pattern, str(info.value))


def test_error_names_the_failing_entry_among_several():
    good = dict(cfg=SNL, stages=(False, False, True, False))
    with pytest.raises(ValueError, match=r"plugins\[2\]: field 'position'"):
        resnet18(good, good | dict(cfg=dict(SNL, postfix=2)), good | dict(position='after_conv9'))


def test_channels_not_divisible_by_reduction():
    """The block raises; the message says which entry, where and with how many channels."""
    with pytest.raises(ValueError) as info:
        ResNet(depth=50, plugins=[
            dict(cfg=SNL, stages=(False, False, True, False), blocks=(-2, )),
            dict(cfg=dict(type='SNLBlock', reduction=3, postfix=2), stages=(False, False, True, False), blocks=(-2, ),
                 position='after_conv2')])
    for pattern in (r'plugins\[1\]', "'SNLBlock'", r'layer3\.4', 'in_channels=256', 'reduction=3',
                    'not divisible', 'valid reductions'):
        assert info.match(pattern), (pattern, str(info.value))


def test_nothing_is_inserted_when_an_entry_fails():
    backbone = ResNet(depth=18)
    before = set(backbone.state_dict())
    with pytest.raises(ValueError):
        insert(backbone, [dict(cfg=SNL, blocks=(0, )),
                          dict(cfg=dict(type='SNLBlock', reduction=7, postfix=2))])
    assert set(backbone.state_dict()) == before


def test_duplicate_names_in_one_residual_block():
    with pytest.raises(ValueError, match=r"plugins\[1\]: a block named 'snl_block' is already inserted at "
                                         r"layer3\.1 by plugins\[0\]; give one of them a different 'cfg.postfix'"):
        resnet18(dict(cfg=SNL, stages=(False, False, True, False), blocks=(1, )),
                 dict(cfg=SNL, stages=(False, False, True, False), blocks=(1, ), position='after_conv1'))


def test_errors_surface_through_the_registry():
    """Built from a config, the message arrives intact."""
    with pytest.raises(ValueError, match=r"plugins\[0\]: field 'blocks' index 9"):
        MODELS.build(dict(type='snl_mm.ResNet', depth=18, plugins=[dict(cfg=SNL, blocks=(9, ))]))
    with pytest.raises(TypeError, match='plugins must be a list'):
        PreResNet(depth=20, plugins=dict(cfg=SNL))


@pytest.mark.parametrize('entry, error, patterns', [
    (dict(cfg=SNL, after='layer3.7'), ValueError,
     [r'plugins\[0\]', "'after'", "'layer3.7'", 'names no submodule', 'close matches', 'layer3.1',
      'top-level submodules']),
    (dict(cfg=SNL, after='bn1'), ValueError, [r'plugins\[0\]', "'after'", 'norm layer']),
    (dict(cfg=SNL), ValueError, [r'plugins\[0\]', "'after'", 'None']),
    (dict(cfg=dict(type='SNLBlock', in_channels=32), after='layer1'), ValueError,
     [r'plugins\[0\]', "'cfg' gives in_channels=32", r'the output of layer1 receives 64 channels']),
    (dict(cfg=dict(type='NoSuchBlock'), after='layer1'), UnknownPluginError, [r'plugins\[0\]', "'cfg.type'"]),
    (dict(cfg=SNL, after='layer1', position='after_block'), ValueError,
     [r'plugins\[0\]', r"unknown field\(s\) \['position'\]", r"\('cfg', 'after'\)"]),
])
def test_plugin_backbone_errors(entry, error, patterns):
    with pytest.raises(error) as info:
        PluginBackbone(backbone=dict(type='mmpretrain.ResNet', depth=18), plugins=[entry])
    for pattern in patterns:
        assert info.match(pattern), (pattern, str(info.value))


def test_channels_come_from_the_build_time_check():
    """No module attribute is read: the block gets the channels the module's output has (3 after a pooling of
    the 3-channel input), and the error of a block that cannot take them names the entry and the place."""
    class Net(nn.Module):
        def __init__(self, pool: nn.Module):
            super().__init__()
            self.pool = pool

        def forward(self, x):
            return self.pool(x)

    with pytest.raises(ValueError, match=r"plugins\[0\]: field 'cfg' \('SNLBlock'\) cannot be built at the output "
                                         r'of pool with in_channels=3'):
        insert(Net(nn.AvgPool2d(4)), [dict(cfg=SNL, after='pool')])
    net = Net(nn.AvgPool2d(4))
    assert insert(net, [dict(cfg=dict(type='SNLBlock', reduction=1), after='pool')]) == ['pool.snl_block']
    assert net.pool.snl_block.in_channels == 3


def test_a_map_whose_sides_do_not_follow_the_input_needs_its_layout():
    """An adaptive pooling's square map cannot be told from a square attention map by its shape: the guess is
    refused with the layout to declare, and the declared layout builds the block."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(4)

        def forward(self, x):
            return self.pool(torch.cat([x] * 4, dim=1))

    with pytest.raises(ValueError, match=r"plugins\[0\]: at the output of pool the value is Tensor\(1, 12, 4, 4\), "
                                         r".*layout='map' for a map all the same"):
        insert(Net(), [dict(cfg=SNL, after='pool')])
    net = Net()
    assert insert(net, [dict(cfg=dict(type='SNLBlock', reduction=1), after='pool', layout='map')]) == ['pool.snl_block']
    assert net.pool.snl_block.in_channels == 12


def test_backbone_without_stages_needs_plugin_backbone():
    with pytest.raises(TypeError, match="no residual stages.*after='path'"):
        insert(nn.Sequential(nn.Conv2d(3, 8, 3)), [dict(cfg=SNL)])
