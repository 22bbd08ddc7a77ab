"""A generated connectivity task in the spirit of Long Range Arena's Pathfinder (Linsley et al. 2018; Tay et al.
2021): are the two marked points joined by a curve?

Every image holds ``1 + num_distractors`` smooth curves that never touch one another; two markers sit on the two
ends of the first curve. Exactly one curve is cut by a gap: the marked one (label 0, the markers are not
connected) or a distractor (label 1, connected). Both classes thus draw the same curves, the same markers at the
same distances and one gap each; only following the curve from one marker tells whether it reaches the other,
a relation along a path that crosses the image.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmpretrain.datasets import BaseDataset

from snl_mm.registry import DATASETS
from snl_mm.utils import is_int
from .generated import (MAX_DRAWS, PALETTE, GeneratedSamples, balanced_labels, check_common, noisy_canvas,
                        split_rng, to_uint8)

#: this task's random stream (see :func:`~snl_mm.datasets.generated.split_rng`)
TASK_ID = 3
#: grey level of the curves and colour of the markers
CURVE_LEVEL = 200.
MARKER_COLOR = PALETTE[0]
#: places tried for one drawn curve before another is drawn
SHIFTS_PER_CURVE = 16
#: curves drawn for one place before the sample starts over
CURVES_PER_PLACE = 100


def random_curve(rng: np.random.Generator, num_segments: int, segment_length: float,
                 max_turn: float) -> np.ndarray:
    """Pixels ``(K, 2)`` (row, col) of a smooth random curve starting near the origin, in order from one end to
    the other, consecutive pixels 8-connected: ``num_segments`` straight segments, turning by at most
    ``max_turn`` radians at each joint."""
    angle = rng.uniform(0, 2 * np.pi)
    turns = np.concatenate([[0.], rng.uniform(-max_turn, max_turn, num_segments - 1)])
    headings = angle + np.cumsum(turns)
    steps = segment_length * np.stack([np.sin(headings), np.cos(headings)], axis=1)
    joints = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    samples = max(2, int(np.ceil(segment_length * 4)))  # per segment, a quarter pixel apart
    fractions = np.arange(samples) / samples
    fine = (joints[:-1, None, :] + fractions[None, :, None] * steps[:, None, :]).reshape(-1, 2)
    fine = np.concatenate([fine, joints[-1:]])
    pixels = np.round(fine).astype(int)
    keep = np.ones(len(pixels), dtype=bool)
    keep[1:] = np.any(pixels[1:] != pixels[:-1], axis=1)
    return pixels[keep]


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels in every direction (a square structuring element)."""
    padded = np.pad(mask, radius)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dr in range(2 * radius + 1):
        for dc in range(2 * radius + 1):
            out |= padded[dr:dr + h, dc:dc + w]
    return out


@DATASETS.register_module()
class PathfinderDataset(GeneratedSamples, BaseDataset):
    """Markers on the two ends of a curve; label 1 if the curve is whole (connected), 0 if a gap cuts it.

    Generated in memory, deterministically from ``seed`` and ``split``; balanced classes. Curves are
    ``num_segments`` straight segments of ``segment_length`` pixels, turning by at most ``max_turn`` radians
    at each joint, one pixel wide, grey on a noisy dark background; no two curves come within two pixels of each
    other. The marked curve's ends lie ``min_distance`` apart or more. The gap removes ``gap`` consecutive
    pixels from the middle third of a curve. Markers are ``marker_size`` squares of :data:`MARKER_COLOR`.
    Each sample: ``img`` (``uint8`` ``(img_size, img_size, 3)``, RGB), ``gt_label``, ``centers`` (the two marker
    centres ``(row, col)``); mmpretrain's pipelines apply.

    Args:
        num_samples (int): Number of images in this split. Defaults to 2000.
        split (str): ``'train'``, ``'val'`` or ``'test'``. Defaults to ``'train'``.
        img_size (int): Height and width. Defaults to 32.
        num_distractors (int): Curves besides the marked one, at least 1 (the gap of a connected sample cuts
            one). Defaults to 2.
        num_segments (int): Segments per curve. Defaults to 4.
        segment_length (float): Length of a segment in pixels. Defaults to 6.
        max_turn (float): Largest turn at a joint, radians. Defaults to 0.7.
        gap (int): Pixels removed from the cut curve, at least 3. Defaults to 4.
        marker_size (int): Side of a marker in pixels (odd). Defaults to 3.
        min_distance (float): Least distance between the markers. Defaults to 12.
        noise_std (float): Standard deviation of the pixel noise. Defaults to 10.
        background (int): Mean grey level of the background. Defaults to 40.
        seed (int): Seed of the generator. Defaults to 0.
        cache_dir (str, optional): Directory where the generated samples are kept and read back by later runs
            with the same arguments (:func:`~snl_mm.datasets.generated.load_or_generate`). Defaults to
            None: generated every time.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`.
    """

    METAINFO = {'classes': ('not connected', 'connected')}
    #: the arguments that determine the samples (the cache key)
    GENERATION_ARGS = ('num_samples', 'split', 'img_size', 'num_distractors', 'num_segments', 'segment_length',
                       'max_turn', 'gap', 'marker_size', 'min_distance', 'noise_std', 'background', 'seed')

    def __init__(self,
                 num_samples: int = 2000,
                 split: str = 'train',
                 img_size: int = 32,
                 num_distractors: int = 2,
                 num_segments: int = 4,
                 segment_length: float = 6.,
                 max_turn: float = 0.7,
                 gap: int = 4,
                 marker_size: int = 3,
                 min_distance: float = 12.,
                 noise_std: float = 10.,
                 background: int = 40,
                 seed: int = 0,
                 cache_dir: Optional[str] = None,
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        owner = type(self).__name__
        check_common(owner, split, num_samples, img_size)
        if not is_int(num_distractors) or num_distractors < 1:
            raise ValueError(f'{owner}: num_distractors must be an int >= 1, got {num_distractors!r}')
        if not is_int(num_segments) or num_segments < 1:
            raise ValueError(f'{owner}: num_segments must be a positive int, got {num_segments!r}')
        if not 1 <= segment_length <= img_size / 2:
            raise ValueError(f'{owner}: segment_length must lie in [1, img_size / 2 = {img_size / 2:g}], got '
                             f'{segment_length}')
        if not 0 <= max_turn <= np.pi / 2:
            raise ValueError(f'{owner}: max_turn must lie in [0, pi / 2] radians, got {max_turn}')
        if not is_int(gap) or gap < 3:
            raise ValueError(f'{owner}: gap must be an int >= 3 (pixels), got {gap!r}')
        if not is_int(marker_size) or marker_size < 1 or marker_size % 2 == 0:
            raise ValueError(f'{owner}: marker_size must be an odd positive int, got {marker_size!r}')
        if not 0 <= min_distance < num_segments * segment_length:
            raise ValueError(f'{owner}: min_distance must lie in [0, num_segments * segment_length = '
                             f'{num_segments * segment_length:g}), got {min_distance}')
        self._keep_arguments(locals(), cache_dir)
        super().__init__(ann_file='', metainfo=metainfo, **kwargs)

    def _place(self, rng: np.random.Generator, taken: np.ndarray, marked: bool) -> Optional[np.ndarray]:
        """One curve shifted to a random place inside the image, two pixels clear of ``taken``; None when
        :data:`CURVES_PER_PLACE` drawn curves found no place (the curves placed before leave no room)."""
        margin = self.marker_size // 2
        for _ in range(CURVES_PER_PLACE):
            curve = random_curve(rng, self.num_segments, self.segment_length, self.max_turn)
            if marked and np.hypot(*(curve[0] - curve[-1])) < self.min_distance:
                continue
            low = margin - curve.min(0)
            high = self.img_size - 1 - margin - curve.max(0)
            if (high < low).any():
                continue
            for shift in rng.integers(low, high + 1, size=(SHIFTS_PER_CURVE, 2)):
                if not taken[curve[:, 0] + shift[0], curve[:, 1] + shift[1]].any():
                    return curve + shift
        return None

    def _layout(self, rng: np.random.Generator) -> List[np.ndarray]:
        """The marked curve and the distractors, two pixels apart; started over when the last ones find no room."""
        for _ in range(MAX_DRAWS // CURVES_PER_PLACE):
            taken = np.zeros((self.img_size, self.img_size), dtype=bool)
            curves = []
            for index in range(1 + self.num_distractors):
                curve = self._place(rng, taken, marked=index == 0)
                if curve is None:
                    break
                mask = np.zeros_like(taken)
                mask[curve[:, 0], curve[:, 1]] = True
                taken |= dilate(mask, 2)
                curves.append(curve)
            else:
                return curves
        raise ValueError(f'{type(self).__name__}: could not place {1 + self.num_distractors} curves two pixels '
                         f'apart in {MAX_DRAWS} draws; use fewer distractors, shorter curves or a larger img_size')

    def _cut(self, rng: np.random.Generator, curve: np.ndarray) -> np.ndarray:
        """``curve`` without ``gap`` consecutive pixels from its middle third."""
        third = len(curve) // 3
        start = int(rng.integers(third, max(third + 1, len(curve) - third - self.gap + 1)))
        return np.concatenate([curve[:start], curve[start + self.gap:]])

    def _sample(self, rng: np.random.Generator, label: int) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
        curves = self._layout(rng)
        ends = (curves[0][0], curves[0][-1])
        cut = 1 if label else 0  # a connected sample has its gap in a distractor
        curves[cut] = self._cut(rng, curves[cut])

        img = noisy_canvas(rng, (self.img_size, self.img_size, 3), self.background, self.noise_std)
        for curve in curves:
            img[curve[:, 0], curve[:, 1]] = CURVE_LEVEL + rng.normal(0, self.noise_std, (len(curve), 3))
        half = self.marker_size // 2
        for row, col in ends:
            patch = img[row - half:row + half + 1, col - half:col + half + 1]
            patch[...] = np.asarray(MARKER_COLOR, dtype=float) + rng.normal(0, self.noise_std, patch.shape)
        return img, [(int(r), int(c)) for r, c in ends]

    def _generate(self) -> List[Dict]:
        """Generate the images and labels of this split."""
        rng = split_rng(self.seed, self.split, TASK_ID)
        data_list = []
        for label in balanced_labels(rng, self.num_samples):
            img, centers = self._sample(rng, int(label))
            data_list.append(dict(img=to_uint8(img), gt_label=int(label), centers=centers))
        return data_list

    def extra_repr(self) -> List[str]:
        """Extra lines of ``repr(dataset)``."""
        return [
            f'Split: \t{self.split}',
            f'Image size: \t{self.img_size}',
            f'Curves: \t1 marked + {self.num_distractors} distractors, {self.num_segments} x '
            f'{self.segment_length:g} px, one gap of {self.gap} px',
            f'Seed: \t{self.seed}',
        ]
