"""A generated video task whose label relates two moments of a clip: the pair task across frames.

Every clip shows two objects, each for ``duration`` frames only, far apart in space and in time (at least
``min_frame_gap`` frames between their appearances, so no frame holds both); the label says whether they have
the same colour. A video network must carry what it saw early in the clip to what it sees late: what a 3D
nonlocal block does in one step, where stacked ``3 x 3 x 3`` convolutions need many layers.

The clips are in-memory arrays in mmaction2's layout, ``imgs`` ``(T, H, W, 3)`` with ``num_clips=1`` and
``clip_len=T``: mmaction2's ``FormatShape`` (``'NCTHW'`` for 3D recognisers, ``'NCHW'`` for 2D ones such as
TSM) and ``PackActionInputs`` turn them into a recogniser's inputs.
"""
from typing import Dict, List, Optional

import numpy as np
from mmaction.datasets import BaseActionDataset

from snl_mm.registry import DATASETS
from snl_mm.utils import is_int
from .generated import (PALETTE, SHAPES, GeneratedSamples, balanced_labels, check_common, check_num_colors,
                        check_object_size, far_apart_corners, noisy_canvas, paint, shape_mask, split_rng, to_uint8)

#: this task's random stream (see :func:`~snl_mm.datasets.generated.split_rng`)
TASK_ID = 4


@DATASETS.register_module()
class VideoRelationDataset(GeneratedSamples, BaseActionDataset):
    """Clips with two objects at different moments and places; label 1 if they share a colour, else 0.

    Generated in memory, deterministically from ``seed`` and ``split``; balanced classes. Each sample: ``imgs``
    (``uint8`` ``(clip_len, img_size, img_size, 3)``, RGB), ``label``, ``num_clips`` (1), ``clip_len``,
    ``total_frames`` and ``centers``: the ``(frame, row, col)`` of each object's first appearance (used to pick
    query positions for attention maps).

    Args:
        num_samples (int): Number of clips in this split. Defaults to 2000.
        split (str): ``'train'``, ``'val'`` or ``'test'``. Defaults to ``'train'``.
        clip_len (int): Frames per clip. Defaults to 8.
        img_size (int): Height and width of the frames. Defaults to 24.
        object_size (int): Height and width of each object. Defaults to 5.
        duration (int): Frames each object is shown. Defaults to 2.
        min_frame_gap (int): Least number of frames between the first frames of the two objects, at least
            ``duration`` (no frame shows both). Defaults to 4.
        min_distance (float): Least distance between the object centres, in pixels. Defaults to 10.
        num_colors (int): Number of object colours, at most ``len(PALETTE)``. Defaults to 6.
        noise_std (float): Standard deviation of the pixel noise (independent in every frame). Defaults to 10.
        background (int): Mean grey level of the background. Defaults to 64.
        seed (int): Seed of the generator. Defaults to 0.
        cache_dir (str, optional): Directory where the generated samples are kept and read back by later runs
            with the same arguments (:func:`~snl_mm.datasets.generated.load_or_generate`). Defaults to
            None: generated every time.
        **kwargs: Other arguments of :class:`mmaction.datasets.BaseActionDataset` (``pipeline``,
            ``test_mode``...).
    """

    METAINFO = {'classes': ('different', 'same')}
    #: the arguments that determine the samples (the cache key)
    GENERATION_ARGS = ('num_samples', 'split', 'clip_len', 'img_size', 'object_size', 'duration', 'min_frame_gap',
                       'min_distance', 'num_colors', 'noise_std', 'background', 'seed')

    def __init__(self,
                 num_samples: int = 2000,
                 split: str = 'train',
                 clip_len: int = 8,
                 img_size: int = 24,
                 object_size: int = 5,
                 duration: int = 2,
                 min_frame_gap: int = 4,
                 min_distance: float = 10.,
                 num_colors: int = 6,
                 noise_std: float = 10.,
                 background: int = 64,
                 seed: int = 0,
                 cache_dir: Optional[str] = None,
                 pipeline: Optional[list] = None,
                 **kwargs) -> None:
        owner = type(self).__name__
        check_common(owner, split, num_samples, img_size)
        check_num_colors(owner, num_colors)
        check_object_size(owner, object_size, img_size)
        if not is_int(duration) or duration < 1:
            raise ValueError(f'{owner}: duration must be a positive int, got {duration!r}')
        if not is_int(clip_len) or clip_len < 2 * duration:
            raise ValueError(f'{owner}: clip_len must be an int >= 2 * duration = {2 * duration}, got {clip_len!r}')
        if not is_int(min_frame_gap) or not duration <= min_frame_gap <= clip_len - duration:
            raise ValueError(f'{owner}: min_frame_gap must be an int in [duration, clip_len - duration] = '
                             f'[{duration}, {clip_len - duration}], got {min_frame_gap!r}')
        if not 0 <= min_distance <= img_size - object_size:
            raise ValueError(f'{owner}: min_distance must lie in [0, {img_size - object_size}] for '
                             f'img_size={img_size} and object_size={object_size}, got {min_distance}')
        self._keep_arguments(locals(), cache_dir)
        super().__init__(ann_file='', pipeline=pipeline or [], **kwargs)

    def _moments(self, rng: np.random.Generator) -> List[int]:
        """First frames of the two objects, ``min_frame_gap`` apart or more, in random order."""
        last = self.clip_len - self.duration
        starts = [(a, b) for a in range(last + 1) for b in range(last + 1) if abs(a - b) >= self.min_frame_gap]
        return list(starts[rng.integers(len(starts))])

    def _generate(self) -> List[Dict]:
        """Generate the clips and labels of this split."""
        rng = split_rng(self.seed, self.split, TASK_ID)
        size, obj, frames = self.img_size, self.object_size, self.clip_len
        masks = [shape_mask(s, obj) for s in SHAPES]
        palette = np.asarray(PALETTE[:self.num_colors], dtype=np.float32)
        data_list = []
        for label in balanced_labels(rng, self.num_samples):
            clip = noisy_canvas(rng, (frames, size, size, 3), self.background, self.noise_std)
            corners = far_apart_corners(rng, 2, size - obj + 1, self.min_distance, type(self).__name__)
            first = rng.integers(self.num_colors)
            second = first if label else (first + rng.integers(1, self.num_colors)) % self.num_colors
            centers = []
            for corner, color, start in zip(corners, (first, second), self._moments(rng)):
                mask = masks[rng.integers(len(SHAPES))]
                for t in range(start, start + self.duration):
                    row, col = paint(rng, clip[t], corner, mask, palette[color], self.noise_std)
                centers.append((start, row, col))
            data_list.append(dict(imgs=to_uint8(clip), label=int(label), num_clips=1, clip_len=frames,
                                  total_frames=frames, centers=centers))
        return data_list
