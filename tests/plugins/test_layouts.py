"""Layouts: the map a block sees is the data at the site rearranged, position by position, and goes back exactly."""
import pytest
import torch

from snl_mm.plugins import Capture, FramesLayout, MapLayout, TokensLayout, layout_from_config
from tests.helpers import random_input


def _round_trip(layout, value, args=(), output=None):
    grid_map, restore = layout.to_map(layout.features(value), args, output)
    back = layout.put_back(value, restore(grid_map))
    return grid_map, back


def test_frames_fold_time_out_of_the_batch():
    x = random_input((2 * 4, 3, 5, 6))  # 2 videos of 4 frames
    clip, back = _round_trip(FramesLayout(4), x)
    assert clip.shape == (2, 3, 4, 5, 6)
    assert torch.equal(clip[1, :, 2], x[4 + 2])  # video 1, frame 2
    assert torch.equal(back, x)
    with pytest.raises(ValueError, match='not a whole number of clips of T=3'):
        FramesLayout(3).validate(x, (), None)
    clips = Capture(None, 'batch')  # the number of clips, counted at call time (TSN's recogniser, C2D)
    clips(None, (random_input((2, 4, 3, 5, 6)), ), {})
    clip, back = _round_trip(FramesLayout(clips=clips), x)
    assert torch.equal(clip, FramesLayout(4).to_map(x, (), None)[0]) and torch.equal(back, x)


def test_tokens_row_major_with_a_class_token():
    b, h, w, c = 2, 3, 4, 5
    tokens = random_input((b, 1 + h * w, c))
    grid_map, back = _round_trip(TokensLayout((h, w), extra_tokens=1), tokens)
    assert grid_map.shape == (b, c, h, w)
    assert torch.equal(grid_map[1, :, 2, 3], tokens[1, 1 + 2 * w + 3])
    assert torch.equal(back, tokens)
    # the class token passes unchanged whatever the block does to the grid
    layout = TokensLayout((h, w), extra_tokens=1)
    grid_map, restore = layout.to_map(tokens, (), None)
    changed = restore(grid_map * 2)
    assert torch.equal(changed[:, 0], tokens[:, 0]) and torch.equal(changed[:, 1:], 2 * tokens[:, 1:])


def test_tokens_in_timesformer_order():
    """TimeSformer numbers patch tokens ``(p t)``: patch outer, time inner."""
    b, t, h, w, c = 1, 3, 2, 2, 4
    tokens = random_input((b, 1 + t * h * w, c))
    grid_map, back = _round_trip(TokensLayout((t, h, w), extra_tokens=1, order='space_time'), tokens)
    assert grid_map.shape == (b, c, t, h, w)
    p, frame = 1 * w + 1, 2  # patch (1, 1), frame 2
    assert torch.equal(grid_map[0, :, frame, 1, 1], tokens[0, 1 + p * t + frame])
    assert torch.equal(back, tokens)


def test_grid_from_the_site_or_a_capture():
    tokens = random_input((1, 6, 3))
    layout = TokensLayout(('input', 1))
    grid_map, _ = layout.to_map(tokens, (tokens, (2, 3)), None)
    assert grid_map.shape == (1, 3, 2, 3)
    capture = Capture('patch_embed', 1)
    with pytest.raises(RuntimeError, match='the token grid was not recorded'):
        TokensLayout(capture).to_map(tokens, (), None)
    capture(None, (), (None, (3, 2)))
    assert TokensLayout(capture).to_map(tokens, (), None)[0].shape == (1, 3, 3, 2)
    with pytest.raises(ValueError, match=r'expects tokens \(B, 0 \+ 4, C\)'):
        TokensLayout((2, 2)).validate(tokens, (), None)


def test_tuple_values_and_channels_last():
    x = random_input((1, 4, 5, 3))
    value = (x, 'passes through')
    layout = MapLayout(channels_last=True, index=0)
    grid_map, back = _round_trip(layout, value)
    assert grid_map.shape == (1, 3, 4, 5) and back[1] == 'passes through' and torch.equal(back[0], x)


def test_layouts_from_config():
    assert layout_from_config('map', 'plugins[0]').type == 'map'
    assert layout_from_config(dict(type='frames', num_segments=8), 'plugins[0]').num_segments == 8
    assert layout_from_config(dict(type='tokens', grid=(7, 7), extra_tokens=1), 'plugins[0]').extra_tokens == 1
    with pytest.raises(ValueError, match=r"plugins\[2\]: field 'layout' must be one of"):
        layout_from_config('nchw', 'plugins[2]')
    with pytest.raises(TypeError, match=r"plugins\[0\]: field 'layout' \(frames\)"):
        layout_from_config(dict(type='frames'), 'plugins[0]')
    with pytest.raises(ValueError, match='num_segments must be a positive int'):
        layout_from_config(dict(type='frames', num_segments=0), 'plugins[0]')
