"""Every inserted block runs exactly once per forward, on the channels it was built for, wherever ``after``
points: a leaf, a residual block, a container (which would run a block added as its child), a container whose
own forward never runs; and the channels come from what the module produces, not from its attributes."""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS, init_default_scope

from snl_mm.plugins import insert

SNL = dict(type='SNLBlock', inner_channels=8)


def _count(block: nn.Module) -> list:
    calls = []
    block.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
    return calls


@pytest.mark.parametrize('backbone, after, host', [
    # a stage (nn.Sequential): the block goes after its last residual block, not into the Sequential
    (dict(type='mmpretrain.ResNet', depth=18), 'layer3', 'layer3.1'),
    (dict(type='mmpretrain.ConvNeXt', arch='atto'), 'stages.2', 'stages.2.5'),
    (dict(type='mmpretrain.MobileNetV2', widen_factor=0.5), 'layer4', 'layer4.3'),
    # VGG runs its features layer by layer (the Sequential's own forward never runs)
    (dict(type='mmpretrain.VGG', depth=11, num_classes=-1), 'features', 'features.12'),
])
def test_container_after_runs_once(backbone, after, host):
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(backbone, plugins=[dict(cfg=SNL, after=after)]))
    assert model.plugin_paths == [f'{host}.snl_block']
    block = model.get_submodule(model.plugin_paths[0])
    calls = _count(block)
    model.train()
    model(torch.randn(2, 3, 64, 64))
    assert len(calls) == 1 and calls[0][1] == block.in_channels
    # the block is not a member of the container the path named
    container = model.get_submodule(after)
    assert all(child is not block for child in container.children())


def test_a_module_that_runs_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return self.conv(self.conv(x)[:, :3])

    with pytest.raises(ValueError, match=r"plugins\[0\]: the output of conv runs 2 times in one forward of Twice "
                                         r'.*a block there would run 2 times'):
        insert(Twice(), [dict(cfg=SNL, after='conv')])


def test_a_module_that_never_runs_is_refused():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.spare = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match=r"plugins\[0\]: the output of spare runs 0 times .*would run never"):
        insert(Unused(), [dict(cfg=SNL, after='spare')])
    model = Unused()
    with pytest.raises(ValueError):
        insert(model, [dict(cfg=SNL, after='conv'), dict(cfg=dict(SNL, postfix=2), after='spare')])
    assert not hasattr(model.conv, 'snl_block')  # nothing inserted when one entry fails


def test_x3d_channels_are_observed():
    """X3D's residual block holds a squeeze-excitation whose fc2 has more channels than the block's output: the
    block gets the output's channels."""
    init_default_scope('mmaction')
    model = MODELS.build(dict(type='X3D', gamma_w=1, gamma_b=2.25, gamma_d=2.2,
                              plugins=[dict(cfg=SNL, after='layer3.4')]))
    block = model.get_submodule(model.plugin_paths[0])
    assert block.in_channels == model.layer3[4].conv3.out_channels != model.layer3[4].se_module.fc2.out_channels
    calls = _count(block)
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 4, 32, 32))
    assert len(calls) == 1 and calls[0][1] == block.in_channels


def test_swin_stage_output_is_a_tuple():
    """A Swin stage returns ``(tokens, hw_shape)``: the block sees the token grid, the tuple passes through."""
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(type='mmpretrain.SwinTransformer', arch='tiny', img_size=224,
                              plugins=[dict(cfg=SNL, after='stages.2')]))
    block = model.get_submodule(model.plugin_paths[0])
    calls = _count(block)
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
    assert calls == [(1, 384, 14, 14)]  # stage 2 of Swin-T: 384 channels on the 224 / 16 grid
    assert outs[-1].shape == (1, 768, 7, 7)


def test_explicit_in_channels_must_agree():
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(type='mmpretrain.ResNet', depth=18,
                              plugins=[dict(cfg=dict(SNL, in_channels=256), after='layer3')]))
    assert model.get_submodule(model.plugin_paths[0]).in_channels == 256
    with pytest.raises(ValueError, match=r"plugins\[0\]: field 'cfg' gives in_channels=128, but the block at the "
                                         r'output of layer3 receives 256 channels'):
        MODELS.build(dict(type='mmpretrain.ResNet', depth=18,
                          plugins=[dict(cfg=dict(SNL, in_channels=128), after='layer3')]))


def test_channels_last_grid_is_not_taken_for_a_map():
    """A (B, H, W, C) grid looks like a map with H channels; the aspect-ratio check refuses the guess, and the
    entry's layout says what it is."""
    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 32, 4, stride=4)
            self.mix = nn.Linear(32, 32)

        def forward(self, x):
            return self.mix(self.proj(x).permute(0, 2, 3, 1))

    with pytest.raises(ValueError, match=r"not a map \(B, C, \*S\).*layout='channels_last'"):
        insert(ChannelsLast(), [dict(cfg=SNL, after='mix')])
    model = ChannelsLast()
    insert(model, [dict(cfg=SNL, after='mix', layout='channels_last')])
    assert model.mix.snl_block.in_channels == 32
    assert model(torch.randn(1, 3, 64, 96)).shape == (1, 16, 24, 32)
