"""VideoRelationDataset: two objects at distant moments and places of a clip; mmaction2's pipelines apply."""
import numpy as np
import pytest
import torch
from mmengine.registry import DATASETS, DefaultScope

pytest.importorskip('mmaction')
from snl_mm.datasets import PALETTE, VideoRelationDataset  # noqa: E402

SMALL = dict(num_samples=40, clip_len=8, img_size=16, object_size=4, duration=2, min_frame_gap=4, min_distance=8,
             num_colors=6, seed=2)


def test_objects_appear_apart_in_time_and_space_and_the_label_is_their_colour():
    ds = VideoRelationDataset(**{**SMALL, 'noise_std': 0.})
    palette = np.asarray(PALETTE[:SMALL['num_colors']])
    labels = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        clip = info['imgs']
        assert clip.shape == (8, 16, 16, 3) and clip.dtype == np.uint8
        assert info['num_clips'] == 1 and info['clip_len'] == 8
        # frames showing an object: its palette colour somewhere (the background is grey 64)
        shown = [bool((np.abs(frame.astype(int) - 64).sum(-1) > 0).any()) for frame in clip]
        (t1, r1, c1), (t2, r2, c2) = info['centers']
        assert abs(t1 - t2) >= SMALL['min_frame_gap'] and np.hypot(r1 - r2, c1 - c2) >= SMALL['min_distance']
        expected = set(range(t1, t1 + 2)) | set(range(t2, t2 + 2))
        assert {t for t, s in enumerate(shown) if s} == expected, 'each object shows for duration frames'
        colours = [clip[t, r, c] for t, r, c in info['centers']]
        assert all((palette == col).all(1).any() for col in colours)
        # no frame holds both objects
        assert not expected & {t1, t1 + 1} & {t2, t2 + 1}
        assert int(np.array_equal(*colours)) == info['label']
        labels.append(info['label'])
    assert sum(labels) == 20


def test_deterministic():
    a, b = VideoRelationDataset(**SMALL), VideoRelationDataset(**SMALL)
    assert all(np.array_equal(a.get_data_info(i)['imgs'], b.get_data_info(i)['imgs']) for i in range(len(a)))
    test = VideoRelationDataset(split='test', **SMALL)
    assert not np.array_equal(a.get_data_info(0)['imgs'], test.get_data_info(0)['imgs'])


@pytest.mark.parametrize('fmt, shape', [('NCTHW', (1, 3, 8, 16, 16)), ('NCHW', (8, 3, 16, 16))])
def test_mmaction_pipeline(fmt, shape):
    with DefaultScope.overwrite_default_scope('mmaction'):
        ds = DATASETS.build(dict(type='snl_mm.VideoRelationDataset', pipeline=[
            dict(type='Flip', flip_ratio=1.0),
            dict(type='FormatShape', input_format=fmt),
            dict(type='PackActionInputs')], **SMALL))
    item = ds[0]
    assert tuple(item['inputs'].shape) == shape and item['inputs'].dtype == torch.uint8
    assert int(item['data_samples'].gt_label) == ds.get_data_info(0)['label']
    frames = ds.get_data_info(0)['imgs'][:, :, ::-1]  # mmaction's Flip ran: horizontally mirrored frames
    packed = item['inputs'].reshape(shape[-4:] if fmt == 'NCHW' else shape[1:])
    packed = packed.permute(0, 2, 3, 1) if fmt == 'NCHW' else packed.permute(1, 2, 3, 0)
    np.testing.assert_array_equal(packed.numpy(), frames)


@pytest.mark.parametrize('kwargs, field', [
    (dict(clip_len=3), 'clip_len'),
    (dict(min_frame_gap=1), 'min_frame_gap'),
    (dict(min_frame_gap=7), 'min_frame_gap'),
    (dict(duration=0), 'duration'),
    (dict(min_distance=13), 'min_distance'),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        VideoRelationDataset(**{**SMALL, **kwargs})
