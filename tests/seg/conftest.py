"""Fixtures of the segmentation tests: mmsegmentation availability and a tiny Cityscapes-format dataset."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from snl_mm.utils.optional import mmseg_available

MMSEG_SKIP_REASON = ('mmsegmentation cannot load: it needs a compiled mmcv (mmcv.ops); build it once with '
                     'tools/build_mmcv.sh')

#: (height, width) of the written images: Cityscapes' 1:2 aspect, 1/8 of its side.
IMAGE_SIZE = (128, 256)
NUM_CLASSES = 19


@pytest.fixture(autouse=True)
def mmseg_default_scope():
    """Every segmentation test runs under ``default_scope='mmseg'``, as an mmsegmentation config does: a scope
    left by another toolbox's test would otherwise resolve unscoped names (a head's loss) in that toolbox."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


@pytest.fixture(scope='session')
def mmseg():
    """Skip the test when mmsegmentation cannot load (no compiled mmcv); else import its models."""
    if not mmseg_available():
        pytest.skip(MMSEG_SKIP_REASON)
    import mmseg.models  # noqa: F401 (registers mmseg's modules)
    return True


def _write_pair(root: Path, split: str, index: int, rng: np.random.Generator) -> None:
    """One image and its train-id label map: class rectangles, each with its own colour and noise."""
    h, w = IMAGE_SIZE
    label = np.full((h, w), 255, np.uint8)  # 255: ignored, as unlabelled pixels of Cityscapes
    image = np.zeros((h, w, 3), np.uint8)
    palette = rng.integers(0, 256, size=(NUM_CLASSES, 3))
    for _ in range(12):
        cls = int(rng.integers(0, NUM_CLASSES))
        y0, x0 = int(rng.integers(0, h - 16)), int(rng.integers(0, w - 16))
        y1, x1 = y0 + int(rng.integers(16, h // 2)), x0 + int(rng.integers(16, w // 2))
        label[y0:y1, x0:x1] = cls
    labelled = label != 255
    image[labelled] = palette[label[labelled]]
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    name = f'city_{index:06d}_000019'
    img_dir = root / 'leftImg8bit' / split / 'city'
    ann_dir = root / 'gtFine' / split / 'city'
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(img_dir / f'{name}_leftImg8bit.png'), image)
    assert cv2.imwrite(str(ann_dir / f'{name}_gtFine_labelTrainIds.png'), label)


@pytest.fixture(scope='session')
def cityscapes_root(tmp_path_factory) -> str:
    """A Cityscapes-format tree with 2 training and 2 validation images of 128x256."""
    root = tmp_path_factory.mktemp('cityscapes')
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for index in range(2):
            _write_pair(root, split, index, rng)
    return str(root)


@pytest.fixture(scope='session')
def mmcv_ops():
    """``mmcv.ops``, or skip when mmcv is not compiled (mmcv-lite)."""
    try:
        import mmcv.ops
    except ImportError:
        pytest.skip('mmcv.ops needs a compiled mmcv; build it once with tools/build_mmcv.sh')
    return mmcv.ops
