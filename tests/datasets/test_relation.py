"""RelationDataset: deterministic generation, the relation the label encodes, mmpretrain's pipeline."""
import numpy as np
import pytest
import torch
from mmengine.registry import DATASETS, DefaultScope

from snl_mm.datasets import PALETTE, RelationDataset

SMALL = dict(num_samples=64, img_size=32, object_size=5, min_distance=16, num_colors=6, noise_std=20, seed=3)


def images_and_labels(ds: RelationDataset):
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    return np.stack([i['img'] for i in infos]), np.array([i['gt_label'] for i in infos]), infos


def test_deterministic_in_seed_and_split():
    a, la, _ = images_and_labels(RelationDataset(**SMALL))
    b, lb, _ = images_and_labels(RelationDataset(**SMALL))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)

    other_seed, _, _ = images_and_labels(RelationDataset(**{**SMALL, 'seed': 4}))
    val, _, _ = images_and_labels(RelationDataset(split='val', **SMALL))
    assert not np.array_equal(a, other_seed)
    assert not np.array_equal(a, val)
    # no validation image repeats a training image
    train_set = {img.tobytes() for img in a}
    assert not any(img.tobytes() in train_set for img in val)


def test_images_labels_and_objects():
    ds = RelationDataset(**{**SMALL, 'num_samples': 200, 'noise_std': 0.})
    imgs, labels, infos = images_and_labels(ds)
    assert imgs.shape == (200, 32, 32, 3) and imgs.dtype == np.uint8
    assert labels.sum() == 100, 'the two classes are balanced'
    assert ds.metainfo['classes'] == ('different', 'same')
    palette = np.asarray(PALETTE[:SMALL['num_colors']])
    for img, label, info in zip(imgs, labels, infos):
        (r1, c1), (r2, c2) = info['centers']
        assert np.hypot(r1 - r2, c1 - c2) >= SMALL['min_distance']
        # every shape covers its centre pixel: without noise it holds the object's palette colour exactly
        colours = [img[r, c] for r, c in info['centers']]
        for colour in colours:
            assert (np.abs(palette - colour).sum(1) == 0).any(), colour
        assert int(np.array_equal(colours[0], colours[1])) == label
    # the two classes do not differ in how far apart the objects lie
    dist = np.array([np.hypot(*np.subtract(*i['centers'])) for i in infos])
    assert abs(dist[labels == 1].mean() - dist[labels == 0].mean()) < 3


@pytest.mark.parametrize('kwargs, field', [
    (dict(split='trainval'), 'split'),
    (dict(num_samples=0), 'num_samples'),
    (dict(num_colors=1), 'num_colors'),
    (dict(num_colors=9), 'num_colors'),
    (dict(object_size=32), 'object_size'),
    (dict(min_distance=40), 'min_distance'),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RelationDataset(**{**SMALL, **kwargs})


def test_registered_and_runs_mmpretrain_pipeline():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = DATASETS.build(
            dict(type='snl_mm.RelationDataset', split='val', pipeline=[
                dict(type='RandomFlip', prob=1.0, direction='horizontal'),
                dict(type='PackInputs'),
            ], **SMALL))
    assert isinstance(ds, RelationDataset)
    item = ds[0]
    img = ds.get_data_info(0)['img']
    assert item['inputs'].shape == (3, 32, 32) and item['inputs'].dtype == torch.uint8
    # mmpretrain's RandomFlip ran: the packed image is the mirrored one
    np.testing.assert_array_equal(item['inputs'].permute(1, 2, 0).numpy(), img[:, ::-1])
    assert int(item['data_samples'].gt_label) == ds.get_data_info(0)['gt_label']
