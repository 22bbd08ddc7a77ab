"""PathfinderDataset: the label is whether the two markers are joined by foreground pixels, found by a flood fill
of the noise-free image (independent of how the generator drew it)."""
from collections import deque

import numpy as np
import pytest
from mmengine.registry import DATASETS, DefaultScope

from snl_mm.datasets import PathfinderDataset

SMALL = dict(num_samples=40, img_size=24, num_distractors=2, num_segments=4, segment_length=4, gap=3,
             min_distance=9, seed=5)


def component(foreground: np.ndarray, start) -> set:
    """8-connected pixels of ``foreground`` reachable from ``start``."""
    seen, todo = {tuple(start)}, deque([tuple(start)])
    h, w = foreground.shape
    while todo:
        r, c = todo.popleft()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                p = (r + dr, c + dc)
                if 0 <= p[0] < h and 0 <= p[1] < w and foreground[p] and p not in seen:
                    seen.add(p)
                    todo.append(p)
    return seen


def test_label_is_connectivity_of_the_markers():
    ds = PathfinderDataset(**{**SMALL, 'noise_std': 0.})
    labels, distances = [], {0: [], 1: []}
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        foreground = info['img'].max(-1) > 100  # curves (200) and markers; background 40
        first, second = info['centers']
        connected = tuple(second) in component(foreground, first)
        assert connected == bool(info['gt_label']), i
        # the curves never touch: foreground splits into the curves and their pieces (markers sit on curve ends)
        pieces = count_components(foreground)
        assert pieces == 1 + SMALL['num_distractors'] + 1, (i, pieces)  # one curve cut in two by the gap
        labels.append(info['gt_label'])
        distances[info['gt_label']].append(np.hypot(*np.subtract(first, second)))
    assert sum(labels) == len(ds) // 2
    assert min(min(d) for d in distances.values()) >= SMALL['min_distance']


def count_components(foreground: np.ndarray) -> int:
    left, count = set(zip(*np.nonzero(foreground))), 0
    while left:
        left -= component(foreground, next(iter(left)))
        count += 1
    return count


def test_marker_distance_does_not_give_the_label_away():
    """Both classes place the markers on the ends of the same kind of curve: their distances match."""
    ds = PathfinderDataset(**{**SMALL, 'num_samples': 400})
    d = {0: [], 1: []}
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        d[info['gt_label']].append(np.hypot(*np.subtract(*info['centers'])))
    assert abs(np.mean(d[0]) - np.mean(d[1])) < 0.5, (np.mean(d[0]), np.mean(d[1]))


def test_deterministic():
    a, b = PathfinderDataset(**SMALL), PathfinderDataset(**SMALL)
    assert all(np.array_equal(a.get_data_info(i)['img'], b.get_data_info(i)['img']) for i in range(len(a)))
    c = PathfinderDataset(**{**SMALL, 'seed': 6})
    assert not np.array_equal(a.get_data_info(0)['img'], c.get_data_info(0)['img'])


@pytest.mark.parametrize('kwargs, field', [
    (dict(num_distractors=0), 'num_distractors'),
    (dict(gap=2), 'gap'),
    (dict(marker_size=2), 'marker_size'),
    (dict(max_turn=3.), 'max_turn'),
    (dict(min_distance=30), 'min_distance'),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PathfinderDataset(**{**SMALL, **kwargs})


def test_no_room_is_an_error():
    with pytest.raises(ValueError, match='could not place'):
        PathfinderDataset(**{**SMALL, 'img_size': 12, 'num_distractors': 6, 'num_samples': 2})


def test_mmpretrain_pipeline():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = DATASETS.build(dict(type='snl_mm.PathfinderDataset', pipeline=[dict(type='PackInputs')], **SMALL))
    assert ds[0]['inputs'].shape == (3, 24, 24)
    assert ds.metainfo['classes'] == ('not connected', 'connected')
