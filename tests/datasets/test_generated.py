"""What the generated datasets share: the cache, its key, and clear errors."""
import os

import numpy as np
import pytest

from snl_mm.datasets import MajorityDataset, PathfinderDataset, RelationDataset
from snl_mm.datasets.generated import generation_key

ARGS = {
    RelationDataset: dict(num_samples=20, seed=1),
    MajorityDataset: dict(num_samples=20, seed=1),
    PathfinderDataset: dict(num_samples=20, seed=1),
}


@pytest.mark.parametrize('cls', list(ARGS))
def test_cache_returns_what_generation_gives(cls, tmp_path, monkeypatch):
    fresh = cls(**ARGS[cls])
    first = cls(cache_dir=str(tmp_path), **ARGS[cls])
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith(f'{cls.__name__}-train-') and files[0].endswith('.pkl')

    # the second dataset reads the file: generation is not called
    def refuse(self):
        raise AssertionError('generated although the cache holds these samples')

    monkeypatch.setattr(cls, '_generate', refuse)
    cached = cls(cache_dir=str(tmp_path), **ARGS[cls])
    for i in range(len(fresh)):
        a, b, c = fresh.get_data_info(i), first.get_data_info(i), cached.get_data_info(i)
        assert np.array_equal(a['img'], b['img']) and np.array_equal(a['img'], c['img'])
        assert a['gt_label'] == c['gt_label'] and a['centers'] == c['centers']
    # other arguments, another file
    monkeypatch.undo()
    cls(cache_dir=str(tmp_path), **{**ARGS[cls], 'seed': 2})
    assert len(os.listdir(tmp_path)) == 2


def test_key_depends_on_every_generation_argument():
    base = RelationDataset(num_samples=4, lazy_init=True)  # the key needs the arguments, not the samples
    keys = {generation_key(base, RelationDataset.GENERATION_ARGS)}
    for change in (dict(num_samples=6), dict(split='val'), dict(img_size=28), dict(object_size=5),
                   dict(min_distance=15), dict(num_colors=4), dict(noise_std=3.), dict(background=50), dict(seed=9)):
        ds = RelationDataset(**{'num_samples': 4, **change}, lazy_init=True)
        keys.add(generation_key(ds, RelationDataset.GENERATION_ARGS))
    assert len(keys) == 10
    assert set(RelationDataset.GENERATION_ARGS) >= {'num_samples', 'split', 'seed'}
