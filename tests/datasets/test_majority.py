"""MajorityDataset: one colour holds a strict majority of the objects (label 1) or misses it by one (label 0)."""
import numpy as np
import pytest
import torch
from mmengine.registry import DATASETS, DefaultScope

from snl_mm.datasets import PALETTE, MajorityDataset

SMALL = dict(num_samples=60, img_size=32, object_size=5, num_objects=5, min_distance=9, num_colors=4, seed=1)


def infos(ds):
    return [ds.get_data_info(i) for i in range(len(ds))]


def test_deterministic_and_splits_differ():
    a, b = infos(MajorityDataset(**SMALL)), infos(MajorityDataset(**SMALL))
    assert all(np.array_equal(x['img'], y['img']) and x['gt_label'] == y['gt_label'] for x, y in zip(a, b))
    val = {i['img'].tobytes() for i in infos(MajorityDataset(split='val', **SMALL))}
    assert not val & {i['img'].tobytes() for i in a}


@pytest.mark.parametrize('num_objects, num_colors', [(5, 4), (3, 3), (4, 2), (7, 3)])
def test_label_is_a_strict_majority_read_from_the_pixels(num_objects, num_colors):
    ds = MajorityDataset(**{**SMALL, 'num_samples': 80, 'noise_std': 0., 'num_objects': num_objects,
                            'min_distance': 7, 'num_colors': num_colors})
    labels = []
    palette = np.asarray(PALETTE[:num_colors])
    for info in infos(ds):
        assert_far_apart(info["centers"], 7)
        # without noise every object's centre pixel holds its palette colour exactly
        read = [int(np.flatnonzero((palette == info['img'][r, c]).all(1))[0]) for r, c in info['centers']]
        assert read == info['colors']
        top = np.bincount(read).max()
        assert (top > num_objects / 2) == bool(info['gt_label'])
        # a near miss: the classes differ by one object of the leading colour
        assert top == num_objects // 2 + info['gt_label']
        labels.append(info['gt_label'])
    assert sum(labels) == 40


def assert_far_apart(centers, least):
    c = np.asarray(centers)
    gaps = np.hypot(*(c[:, None] - c[None]).transpose(2, 0, 1))
    assert gaps[np.triu_indices(len(c), 1)].min() >= least


@pytest.mark.parametrize('kwargs, field', [
    (dict(num_objects=2), 'num_objects'),
    (dict(num_objects=5, num_colors=2), 'num_colors'),  # 2 + 2 + 1 needs three colours
    (dict(split='trainval'), 'split'),
    (dict(min_distance=40), 'min_distance'),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MajorityDataset(**{**SMALL, **kwargs})


def test_no_room_is_an_error():
    with pytest.raises(ValueError, match='could not place 9 objects'):
        MajorityDataset(**{**SMALL, 'num_objects': 9, 'min_distance': 20, 'num_samples': 2})


def test_mmpretrain_pipeline():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = DATASETS.build(dict(type='snl_mm.MajorityDataset', pipeline=[dict(type='PackInputs')], **SMALL))
    item = ds[3]
    assert item['inputs'].shape == (3, 32, 32) and item['inputs'].dtype == torch.uint8
    assert int(item['data_samples'].gt_label) == ds.get_data_info(3)['gt_label']
    assert ds.metainfo['classes'] == ('no majority', 'majority')
