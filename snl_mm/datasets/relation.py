"""A generated image dataset whose labels depend on a relation between distant regions.

Every image holds two small objects far apart on a noisy background; the label says whether the two
objects have the same colour. The colour of one object alone says nothing about the label, and the two
objects are further apart than the receptive field of the early layers of a small CNN, so a network
must bring information from one object to the other: what a nonlocal block does in one step and a
stack of local convolutions can only do once it is deep enough to see both objects.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmpretrain.datasets import BaseDataset

from snl_mm.registry import DATASETS

#: well separated RGB colours; ``num_colors`` takes the first ones.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))

#: object shapes; the shape is drawn independently of the label.
SHAPES: Tuple[str, ...] = ('square', 'disc', 'cross')

SPLITS: Tuple[str, ...] = ('train', 'val', 'test')


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of one object shape."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    if shape == 'square':
        return np.ones((size, size), dtype=bool)
    if shape == 'disc':
        return yy**2 + xx**2 <= (size / 2)**2 + 0.5
    # cross: a plus sign one third of the object wide
    half = max(size // 6, 0) + 0.5
    return (np.abs(yy) <= half) | (np.abs(xx) <= half)


@DATASETS.register_module()
class RelationDataset(BaseDataset):
    """Two objects far apart; label 1 if they share a colour, else 0.

    Images are generated in memory, deterministically from ``seed`` and ``split`` (each split draws
    from its own random stream). The classes are balanced. Each sample is a dict with ``img`` (``uint8`` array of shape ``(img_size, img_size, 3)``,
    RGB), ``gt_label`` and ``centers`` (the ``(row, col)`` centre of each object, used to pick query
    positions for attention maps), and goes through mmpretrain's pipelines like the in-memory CIFAR
    datasets (``dict(type='PackInputs')`` is enough).

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
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset` (``pipeline``,
            ``test_mode``, ``indices``, ...).
    """

    METAINFO = {'classes': ('different', 'same')}

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
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f'RelationDataset: split={split!r} is not one of {SPLITS}')
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f'RelationDataset: num_samples must be a positive int, got {num_samples!r}')
        if not 2 <= num_colors <= len(PALETTE):
            raise ValueError(f'RelationDataset: num_colors must lie in [2, {len(PALETTE)}], '
                             f'got {num_colors}')
        if not 1 <= object_size < img_size:
            raise ValueError(f'RelationDataset: object_size must lie in [1, img_size), got '
                             f'{object_size} with img_size={img_size}')
        # the farthest two centres can be is the diagonal of the square they move in; keep room
        # for rejection sampling to end quickly
        reach = (img_size - object_size) * np.sqrt(2)
        if not 0 <= min_distance <= 0.8 * reach:
            raise ValueError(f'RelationDataset: min_distance must lie in [0, {0.8 * reach:.1f}] for '
                             f'img_size={img_size} and object_size={object_size}, got {min_distance}')
        self.num_samples = num_samples
        self.split = split
        self.img_size = img_size
        self.object_size = object_size
        self.min_distance = float(min_distance)
        self.num_colors = num_colors
        self.noise_std = float(noise_std)
        self.background = background
        self.seed = seed
        super().__init__(ann_file='', metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[Dict]:
        """Generate the images and labels of this split."""
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split)])
        size, obj = self.img_size, self.object_size
        masks = [_shape_mask(s, obj) for s in SHAPES]
        palette = np.asarray(PALETTE[:self.num_colors], dtype=np.float32)
        labels = rng.permutation(np.arange(self.num_samples) % 2)

        data_list = []
        for label in labels:
            img = rng.normal(self.background, self.noise_std, (size, size, 3))
            corners = self._far_apart_corners(rng)
            first = rng.integers(self.num_colors)
            second = first if label else (first + rng.integers(1, self.num_colors)) % self.num_colors
            centers = []
            for (row, col), color in zip(corners, (first, second)):
                mask = masks[rng.integers(len(SHAPES))]
                patch = img[row:row + obj, col:col + obj]
                patch[mask] = palette[color] + rng.normal(0, self.noise_std, (int(mask.sum()), 3))
                centers.append((row + obj // 2, col + obj // 2))
            data_list.append(
                dict(img=np.clip(img, 0, 255).round().astype(np.uint8),
                     gt_label=int(label),
                     centers=centers))
        return data_list

    def _far_apart_corners(self, rng: np.random.Generator) -> Sequence[Tuple[int, int]]:
        """Top-left corners of two objects whose centres lie ``min_distance`` apart or more."""
        span = self.img_size - self.object_size + 1
        while True:
            corners = rng.integers(0, span, size=(2, 2))
            if np.hypot(*(corners[0] - corners[1])) >= self.min_distance:
                return [tuple(int(v) for v in c) for c in corners]

    def extra_repr(self) -> List[str]:
        """Extra lines of ``repr(dataset)``."""
        return [
            f'Split: \t{self.split}',
            f'Image size: \t{self.img_size}',
            f'Objects: \t2 of size {self.object_size}, {self.num_colors} colours, centres '
            f'>= {self.min_distance:g} px apart',
            f'Seed: \t{self.seed}',
        ]
