"""Fixtures of the detection tests: mmdetection's models and a tiny COCO-format dataset written to disk."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

#: (height, width) of the written images
IMAGE_SIZE = (96, 128)
#: the category names of the objects drawn (COCO's ids 1 and 3)
OBJECTS = ('person', 'car')


@pytest.fixture(scope='session')
def mmdet_models():
    """mmdetection's models (they import compiled mmcv.ops: RoIAlign, NMS), or skip with the reason."""
    pytest.importorskip('mmdet', reason='mmdetection is installed by the `tests` extra')
    try:
        import mmcv.ops  # noqa: F401
    except ImportError as err:
        pytest.skip(f'mmdetection\'s detectors need a compiled mmcv (tools/build_mmcv.sh): {err}')
    import mmdet.models  # noqa: F401 (registers mmdet's modules)
    return True


def _write_image(path: Path, boxes, rng: np.random.Generator) -> None:
    h, w = IMAGE_SIZE
    image = np.clip(rng.normal(110, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    for (x, y, bw, bh), colour in zip(boxes, ((220, 40, 40), (40, 40, 220))):
        image[y:y + bh, x:x + bw] = colour
    assert cv2.imwrite(str(path), image)


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory) -> Path:
    """``images/*.jpg`` and ``annotations/instances.json`` (COCO format, boxes and polygons): two images of
    96x128, each with a "person" and a "car" rectangle; the 80 categories of COCO, as a detector predicts them."""
    from mmdet.datasets import CocoDataset
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CocoDataset.METAINFO['classes'])]
    ids = {c['name']: c['id'] for c in categories}
    root = tmp_path_factory.mktemp('coco')
    (root / 'images').mkdir()
    (root / 'annotations').mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in (1, 2):
        boxes = [(8 * image_id, 10, 40, 50), (70, 20 + 10 * image_id, 50, 30)]
        name = f'{image_id:012d}.jpg'
        _write_image(root / 'images' / name, boxes, rng)
        images.append(dict(id=image_id, file_name=name, height=IMAGE_SIZE[0], width=IMAGE_SIZE[1]))
        for (x, y, bw, bh), name in zip(boxes, OBJECTS):
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=ids[name], iscrowd=0,
                bbox=[x, y, bw, bh], area=bw * bh, segmentation=[[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]))
    (root / 'annotations' / 'instances.json').write_text(
        json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return root
