"""A generated counting task: does one colour hold the majority of several distant objects?

Every image holds ``num_objects`` small objects, pairwise far apart, on a noisy background. Label 1: one
colour is carried by more than half of them (exactly ``num_objects // 2 + 1``); label 0: no colour is (the most
frequent one is carried by exactly ``num_objects // 2``: a near miss, one object short). Both classes hold the
same number of objects and the same colours, so no single object and no colour histogram that a network adds
up position by position tells the classes apart (the label is not a linear function of the colour counts):
the objects must be compared with one another, across the image.
"""
from typing import Dict, List, Optional

import numpy as np
from mmpretrain.datasets import BaseDataset

from snl_mm.registry import DATASETS
from snl_mm.utils import is_int
from .generated import (GeneratedSamples, check_common, check_num_colors, check_object_size, draw_coloured_objects,
                        split_rng)

#: this task's random stream (see :func:`~snl_mm.datasets.generated.split_rng`)
TASK_ID = 2


def majority_colors(rng: np.random.Generator, label: int, num_objects: int, num_colors: int) -> np.ndarray:
    """Colour indices of the objects: the most frequent colour on ``num_objects // 2 + label`` of them.

    The other objects take colours other than the leading one, drawn until none of them is carried by more
    objects than the leading colour (with ``label`` 0, ties with the leading colour are allowed: still no
    majority).
    """
    lead_count = num_objects // 2 + label
    lead = rng.integers(num_colors)
    others = [c for c in range(num_colors) if c != lead]
    while True:
        rest = rng.choice(others, size=num_objects - lead_count)
        if rest.size == 0 or np.bincount(rest).max() <= (lead_count - label):
            break
    colors = np.concatenate([np.full(lead_count, lead), rest])
    return rng.permutation(colors)


@DATASETS.register_module()
class MajorityDataset(GeneratedSamples, BaseDataset):
    """``num_objects`` distant objects; label 1 if one colour holds a strict majority of them, else 0.

    Generated in memory, deterministically from ``seed`` and ``split`` (each split draws from its own random
    stream); the classes are balanced. Each sample is a dict with ``img`` (``uint8`` ``(img_size, img_size, 3)``,
    RGB), ``gt_label``, ``centers`` (the ``(row, col)`` centre of each object) and ``colors`` (their colour
    indices into :data:`~snl_mm.datasets.PALETTE`); mmpretrain's pipelines apply (``dict(type='PackInputs')``).

    Args:
        num_samples (int): Number of images in this split. Defaults to 2000.
        split (str): ``'train'``, ``'val'`` or ``'test'``. Defaults to ``'train'``.
        img_size (int): Height and width of the images. Defaults to 32.
        object_size (int): Height and width of each object. Defaults to 5.
        num_objects (int): Objects per image, at least 3. Defaults to 5.
        min_distance (float): Least distance between two object centres, in pixels. Defaults to 9.
        num_colors (int): Number of object colours; enough that a near miss exists
            (``num_colors * (num_objects // 2) >= num_objects``), at most ``len(PALETTE)``. Defaults to 4.
        noise_std (float): Standard deviation of the Gaussian pixel noise. Defaults to 10.
        background (int): Mean grey level of the background. Defaults to 64.
        seed (int): Seed of the generator. Defaults to 0.
        cache_dir (str, optional): Directory where the generated samples are kept and read back by later runs
            with the same arguments (:func:`~snl_mm.datasets.generated.load_or_generate`). Defaults to
            None: generated every time.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset` (``pipeline``, ``test_mode``...).
    """

    METAINFO = {'classes': ('no majority', 'majority')}
    #: the arguments that determine the samples (the cache key)
    GENERATION_ARGS = ('num_samples', 'split', 'img_size', 'object_size', 'num_objects', 'min_distance', 'num_colors',
                       'noise_std', 'background', 'seed')

    def __init__(self,
                 num_samples: int = 2000,
                 split: str = 'train',
                 img_size: int = 32,
                 object_size: int = 5,
                 num_objects: int = 5,
                 min_distance: float = 9.,
                 num_colors: int = 4,
                 noise_std: float = 10.,
                 background: int = 64,
                 seed: int = 0,
                 cache_dir: Optional[str] = None,
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        owner = type(self).__name__
        check_common(owner, split, num_samples, img_size)
        check_object_size(owner, object_size, img_size)
        if not is_int(num_objects) or num_objects < 3:
            raise ValueError(f'{owner}: num_objects must be an int >= 3, got {num_objects!r}')
        least_colors = -(-num_objects // (num_objects // 2))
        check_num_colors(owner, num_colors, least=max(2, least_colors))
        if not 0 <= min_distance <= img_size - object_size:
            raise ValueError(f'{owner}: min_distance must lie in [0, {img_size - object_size}] for '
                             f'img_size={img_size} and object_size={object_size}, got {min_distance}')
        self._keep_arguments(locals(), cache_dir)
        super().__init__(ann_file='', metainfo=metainfo, **kwargs)

    def _generate(self) -> List[Dict]:
        """Generate the images and labels of this split."""
        return draw_coloured_objects(
            split_rng(self.seed, self.split, TASK_ID), self, self.num_objects,
            lambda rng, label: majority_colors(rng, label, self.num_objects, self.num_colors))

    def extra_repr(self) -> List[str]:
        """Extra lines of ``repr(dataset)``."""
        return [
            f'Split: \t{self.split}',
            f'Image size: \t{self.img_size}',
            f'Objects: \t{self.num_objects} of size {self.object_size}, {self.num_colors} colours, centres '
            f'>= {self.min_distance:g} px apart',
            f'Seed: \t{self.seed}',
        ]
