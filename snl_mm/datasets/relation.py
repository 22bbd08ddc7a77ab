"""A generated image dataset whose labels depend on a relation between distant regions.

Every image holds two small objects far apart on a noisy background; the label says whether the two
objects have the same colour. The colour of one object alone says nothing about the label, and the two
objects are further apart than the receptive field of the early layers of a small CNN, so a network
must bring information from one object to the other: what a nonlocal block does in one step and a
stack of local convolutions can only do once it is deep enough to see both objects.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmpretrain.datasets import BaseDataset

from snl_mm.registry import DATASETS
from .generated import (GeneratedSamples, check_common, check_num_colors, check_object_size, draw_coloured_objects,
                        split_rng)


@DATASETS.register_module()
class RelationDataset(GeneratedSamples, BaseDataset):
    """Two objects far apart; label 1 if they share a colour, else 0.

    Images are generated in memory, deterministically from ``seed`` and ``split`` (each split draws
    from its own random stream). The classes are balanced. Each sample is a dict with ``img`` (``uint8``
    array of shape ``(img_size, img_size, 3)``, RGB), ``gt_label``, ``centers`` (the ``(row, col)``
    centre of each object, used to pick query positions for attention maps) and ``colors`` (their palette
    indices), and goes through mmpretrain's
    pipelines like the in-memory CIFAR datasets (``dict(type='PackInputs')`` is enough).

    Args:
        num_samples (int): Number of images in this split. Defaults to 2000.
        split (str): ``'train'``, ``'val'`` or ``'test'``. Defaults to ``'train'``.
        img_size (int): Height and width of the images. Defaults to 32.
        object_size (int): Height and width of each object. Defaults to 7.
        min_distance (float): Least Euclidean distance between the two object centres, in pixels.
            Defaults to 21: with the default object size, no 15 x 15 window (the receptive field of seven
            stacked 3x3 convolutions) holds both objects whole.
        num_colors (int): Number of object colours, at most ``len(PALETTE)`` (8). Defaults to 6.
        noise_std (float): Standard deviation of the Gaussian pixel noise. Defaults to 10.
        background (int): Mean grey level of the background. Defaults to 64.
        seed (int): Seed of the generator. Defaults to 0.
        cache_dir (str, optional): Directory where the generated samples are kept and read back by later runs
            with the same arguments (:func:`~snl_mm.datasets.generated.load_or_generate`). Defaults to
            None: generated every time.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset` (``pipeline``,
            ``test_mode``, ``indices``, ...).
    """

    METAINFO = {'classes': ('different', 'same')}
    #: the arguments that determine the samples (the cache key)
    GENERATION_ARGS = ('num_samples', 'split', 'img_size', 'object_size', 'min_distance', 'num_colors', 'noise_std',
                       'background', 'seed')

    def __init__(self,
                 num_samples: int = 2000,
                 split: str = 'train',
                 img_size: int = 32,
                 object_size: int = 7,
                 min_distance: float = 21.,
                 num_colors: int = 6,
                 noise_std: float = 10.,
                 background: int = 64,
                 seed: int = 0,
                 cache_dir: Optional[str] = None,
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        owner = type(self).__name__
        check_common(owner, split, num_samples, img_size)
        check_num_colors(owner, num_colors)
        check_object_size(owner, object_size, img_size)
        # the farthest two centres can be is the diagonal of the square they move in; keep room
        # for rejection sampling to end quickly
        reach = (img_size - object_size) * np.sqrt(2)
        if not 0 <= min_distance <= 0.8 * reach:
            raise ValueError(f'{owner}: min_distance must lie in [0, {0.8 * reach:.1f}] for '
                             f'img_size={img_size} and object_size={object_size}, got {min_distance}')
        self._keep_arguments(locals(), cache_dir)
        super().__init__(ann_file='', metainfo=metainfo, **kwargs)

    def _generate(self) -> List[Dict]:
        """Generate the images and labels of this split."""
        return draw_coloured_objects(split_rng(self.seed, self.split), self, 2, self._colors)

    def _colors(self, rng: np.random.Generator, same: int) -> Tuple[int, int]:
        """The colours of the two objects: one colour, or two different ones."""
        first = rng.integers(self.num_colors)
        second = first if same else (first + rng.integers(1, self.num_colors)) % self.num_colors
        return first, second

    def extra_repr(self) -> List[str]:
        """Extra lines of ``repr(dataset)``."""
        return [
            f'Split: \t{self.split}',
            f'Image size: \t{self.img_size}',
            f'Objects: \t2 of size {self.object_size}, {self.num_colors} colours, centres '
            f'>= {self.min_distance:g} px apart',
            f'Seed: \t{self.seed}',
        ]
