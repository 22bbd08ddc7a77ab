"""What every generated dataset of the package shares: seeded splits, balanced labels, argument checks, and
the drawing of objects on a noisy canvas.

Each task (:mod:`.relation`, :mod:`.majority`, :mod:`.pathfinder`, :mod:`.video`) generates its samples in
memory from ``(seed, split)``; each split draws from its own random stream, so train, validation and test
images never coincide, and the same arguments give the same images on every machine. With a ``cache_dir`` the
samples are also written there once and read back by every later run with the same arguments and code
(:func:`load_or_generate`).
"""
import hashlib
import json
import os
import pickle
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from snl_mm.utils import is_int

#: well separated RGB colours; ``num_colors`` takes the first ones.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))

#: object shapes; the shape is drawn independently of the label.
SHAPES: Tuple[str, ...] = ('square', 'disc', 'cross')

SPLITS: Tuple[str, ...] = ('train', 'val', 'test')

#: rejection sampling of object positions gives up after this many draws (the arguments leave no room)
MAX_DRAWS = 10000


def check_common(owner: str, split: Any, num_samples: Any, img_size: Any) -> None:
    """The arguments every generated dataset takes; a ValueError naming the argument and the valid values."""
    if split not in SPLITS:
        raise ValueError(f'{owner}: split={split!r} is not one of {SPLITS}')
    if not is_int(num_samples) or num_samples < 1:
        raise ValueError(f'{owner}: num_samples must be a positive int, got {num_samples!r}')
    if not is_int(img_size) or img_size < 4:
        raise ValueError(f'{owner}: img_size must be an int >= 4, got {img_size!r}')


def check_num_colors(owner: str, num_colors: Any, least: int = 2) -> None:
    if not is_int(num_colors) or not least <= num_colors <= len(PALETTE):
        raise ValueError(f'{owner}: num_colors must lie in [{least}, {len(PALETTE)}], got {num_colors!r}')


def check_object_size(owner: str, object_size: Any, img_size: int) -> None:
    if not is_int(object_size) or not 1 <= object_size < img_size:
        raise ValueError(f'{owner}: object_size must lie in [1, img_size), got {object_size!r} with '
                         f'img_size={img_size}')


def split_rng(seed: int, split: str, task: int = 0) -> np.random.Generator:
    """The random stream of one split of one task.

    Args:
        seed (int): the dataset's seed.
        split (str): one of :data:`SPLITS`.
        task (int): a number per task, so that two tasks with one seed draw different streams (0 is the pair
            task's, whose stream predates the others).
    """
    key = [seed, SPLITS.index(split)] + ([task] if task else [])
    return np.random.default_rng(key)


def balanced_labels(rng: np.random.Generator, num_samples: int, num_classes: int = 2) -> np.ndarray:
    """``num_samples`` labels, the classes as equal as the count allows, in random order."""
    return rng.permutation(np.arange(num_samples) % num_classes)


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of one object shape of :data:`SHAPES`."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    if shape == 'square':
        return np.ones((size, size), dtype=bool)
    if shape == 'disc':
        return yy**2 + xx**2 <= (size / 2)**2 + 0.5
    # cross: a plus sign one third of the object wide
    half = max(size // 6, 0) + 0.5
    return (np.abs(yy) <= half) | (np.abs(xx) <= half)


def far_apart_corners(rng: np.random.Generator, count: int, span: int, min_distance: float,
                      owner: str = '') -> List[Tuple[int, int]]:
    """Top-left corners ``(row, col)`` in ``[0, span)^2`` of ``count`` objects whose corners (hence centres)
    lie ``min_distance`` apart or more, pairwise.

    Raises:
        ValueError: no such placement was found in :data:`MAX_DRAWS` draws (the arguments leave no room).
    """
    first, second = np.triu_indices(count, 1)
    least = min_distance**2
    for _ in range(MAX_DRAWS):
        corners = rng.integers(0, span, size=(count, 2))
        gaps = ((corners[first] - corners[second])**2).sum(1)
        if count < 2 or gaps.min() >= least:
            return [tuple(int(v) for v in c) for c in corners]
    raise ValueError(f'{owner}: could not place {count} objects {min_distance:g} px apart in {MAX_DRAWS} draws; '
                     'lower min_distance or the number of objects, or enlarge img_size')


def noisy_canvas(rng: np.random.Generator, shape: Sequence[int], background: float,
                 noise_std: float) -> np.ndarray:
    """A float image of ``shape`` (``(H, W, 3)``, or frames ``(T, H, W, 3)``): grey ``background`` plus noise."""
    return rng.normal(background, noise_std, tuple(shape))


def paint(rng: np.random.Generator, image: np.ndarray, corner: Tuple[int, int], mask: np.ndarray,
          color: np.ndarray, noise_std: float) -> Tuple[int, int]:
    """Paint one object (``mask`` at ``corner``, ``color`` plus noise) into a float ``(H, W, 3)`` image in place.

    Returns:
        tuple: the ``(row, col)`` centre pixel of the object.
    """
    row, col = corner
    size = mask.shape[0]
    patch = image[row:row + size, col:col + size]
    patch[mask] = color + rng.normal(0, noise_std, (int(mask.sum()), 3))
    return row + size // 2, col + size // 2


def draw_coloured_objects(rng: np.random.Generator, dataset: Any, num_objects: int,
                          colors_of: Callable[[np.random.Generator, int], Sequence[int]]) -> List[Dict]:
    """The samples of a task whose label is a relation between the colours of ``num_objects`` objects.

    One image per label of :func:`balanced_labels`: a noisy canvas of ``dataset.img_size``, the objects (random
    shapes of ``dataset.object_size``) at least ``dataset.min_distance`` apart, their colours (indices into
    :data:`PALETTE`) chosen by ``colors_of(rng, label)``. The stream is drawn in one order, sample by sample:
    canvas, corners, colours, then each object's shape and noise.

    Returns:
        list[dict]: ``img`` (uint8 ``(H, W, 3)``), ``gt_label``, ``centers`` (``(row, col)`` per object) and
        ``colors`` (palette index per object).
    """
    size, obj = dataset.img_size, dataset.object_size
    masks = [shape_mask(s, obj) for s in SHAPES]
    palette = np.asarray(PALETTE[:dataset.num_colors], dtype=np.float32)
    data_list = []
    for label in balanced_labels(rng, dataset.num_samples):
        img = noisy_canvas(rng, (size, size, 3), dataset.background, dataset.noise_std)
        corners = far_apart_corners(rng, num_objects, size - obj + 1, dataset.min_distance, type(dataset).__name__)
        colors = [int(c) for c in colors_of(rng, int(label))]
        centers = [paint(rng, img, corner, masks[rng.integers(len(SHAPES))], palette[c], dataset.noise_std)
                   for corner, c in zip(corners, colors)]
        data_list.append(dict(img=to_uint8(img), gt_label=int(label), centers=centers, colors=colors))
    return data_list


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image as the ``uint8`` pixels a pipeline receives."""
    return np.clip(image, 0, 255).round().astype(np.uint8)


def generation_key(dataset: Any, names: Sequence[str]) -> str:
    """A digest of what determines a dataset's samples: its class, the values of its generation arguments
    ``names`` and the source of the modules that generate them (a changed generator never reads a stale cache)."""
    sources = []
    for module in {type(dataset).__module__, __name__}:
        path = getattr(sys.modules[module], '__file__', None)
        if path:
            with open(path, 'rb') as f:
                sources.append(hashlib.sha256(f.read()).hexdigest())
    payload = json.dumps([type(dataset).__name__, {n: getattr(dataset, n) for n in names}, sorted(sources)],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_or_generate(dataset: Any, names: Sequence[str], cache_dir: Optional[str],
                     generate: Callable[[], List[Dict]]) -> List[Dict]:
    """``generate()``, or the samples a previous call with the same :func:`generation_key` wrote to ``cache_dir``.

    Without ``cache_dir`` the samples are generated every time. The cache file is written under a temporary
    name and renamed, so that processes generating the same split at once never read a partial file.
    """
    if cache_dir is None:
        return generate()
    path = os.path.join(cache_dir, f'{type(dataset).__name__}-{getattr(dataset, "split", "all")}-'
                        f'{generation_key(dataset, names)}.pkl')
    if os.path.isfile(path):
        with open(path, 'rb') as f:
            return pickle.load(f)
    data = generate()
    os.makedirs(cache_dir, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=cache_dir, suffix='.tmp')
    with os.fdopen(handle, 'wb') as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return data


class GeneratedSamples:
    """What a generated dataset class adds to its OpenMMLab base (``class X(GeneratedSamples, BaseDataset)``): its
    generation arguments kept as attributes (:attr:`GENERATION_ARGS`), and samples that :meth:`_generate` makes
    and :func:`load_or_generate` caches."""

    #: the arguments that determine the samples (the cache key)
    GENERATION_ARGS: Tuple[str, ...] = ()

    def _keep_arguments(self, values: Dict[str, Any], cache_dir: Optional[str]) -> None:
        """Store the generation arguments (from ``values``, e.g. the ``locals()`` of ``__init__``) and the cache."""
        for name in self.GENERATION_ARGS:
            setattr(self, name, values[name])
        self.cache_dir = cache_dir

    def load_data_list(self) -> List[Dict]:
        """The samples of this split: generated, or read from ``cache_dir``."""
        return load_or_generate(self, self.GENERATION_ARGS, self.cache_dir, self._generate)

    def _generate(self) -> List[Dict]:
        raise NotImplementedError
