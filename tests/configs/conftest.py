"""Tiny datasets in the formats the paper's configs read, written once per test session.

Each writer puts a few samples in the on-disk layout the upstream dataset class parses (nothing is faked
above the files): mmpretrain's ImageNet (JPEG folders + ``meta/*.txt``), CUB-200-2011 (its own txt files),
CIFAR-10/100 (pickled python batches), mmaction2's VideoDataset (mp4 files written by OpenCV with the
``mp4v`` codec + a video list) and RawframeDataset (JPEG frame folders + a frame list). And the checkpoints
the fine-tuning configs start from: an mmpretrain ImageNet ResNet-50, built from the upstream config, and the
Kinetics-400 recognizer each UCF-101 config starts from, built by the upstream classes from the config's model
without its blocks (random weights: the test checks that they load, not what they know).
"""
import copy
import hashlib
import pickle
from pathlib import Path
from typing import Callable, Dict

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.hub import get_config
from mmengine.registry import MODELS, DefaultScope

NUM_IMAGES = 2  # per split: one training iteration and one validation step at batch size 2


def _jpeg(path: Path, rng: np.random.Generator, height: int = 48, width: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_imagenet(root: Path, rng: np.random.Generator) -> None:
    """mmpretrain ImageNet: ``train/<wnid>/*.JPEG``, ``val/*.JPEG``, ``meta/{train,val}.txt``."""
    train = [('n01440764/n01440764_10026.JPEG', 0), ('n15075141/n15075141_999.JPEG', 999)]
    val = [('ILSVRC2012_val_00000001.JPEG', 65), ('ILSVRC2012_val_00000002.JPEG', 970)]
    for split, items in (('train', train), ('val', val)):
        for name, _ in items:
            _jpeg(root / split / name, rng)
        (root / 'meta').mkdir(parents=True, exist_ok=True)
        (root / 'meta' / f'{split}.txt').write_text(''.join(f'{n} {label}\n' for n, label in items))


def write_cub(root: Path, rng: np.random.Generator) -> None:
    """CUB-200-2011: ``images/``, ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``."""
    items = [('001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg', 1, 1),
             ('200.Common_Yellowthroat/Common_Yellowthroat_0055_190967.jpg', 200, 1),
             ('014.Indigo_Bunting/Indigo_Bunting_0010_13000.jpg', 14, 0),
             ('098.Scott_Oriole/Scott_Oriole_0004_795829.jpg', 98, 0)]
    for name, _, _ in items:
        _jpeg(root / 'images' / name, rng)
    (root / 'images.txt').write_text(''.join(f'{i + 1} {n}\n' for i, (n, _, _) in enumerate(items)))
    (root / 'image_class_labels.txt').write_text(''.join(f'{i + 1} {c}\n' for i, (_, c, _) in enumerate(items)))
    (root / 'train_test_split.txt').write_text(''.join(f'{i + 1} {t}\n' for i, (_, _, t) in enumerate(items)))


def _pickle(path: Path, obj: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root: Path, rng: np.random.Generator, num_classes: int, num_images: int = NUM_IMAGES,
                num_test: int = NUM_IMAGES) -> Dict[str, str]:
    """The python version of the CIFAR archives (``num_images`` per training batch file, ``num_test`` in the test
    file); returns ``{file name: md5}`` of what was written."""

    def batch(label_key: str, n: int) -> dict:
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        return {'data': data, label_key: [int(v) for v in rng.integers(0, num_classes, n)]}

    md5 = {}
    if num_classes == 10:
        folder = root / 'cifar-10-batches-py'
        for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
            md5[name] = _pickle(folder / name, batch('labels', num_test if name == 'test_batch' else num_images))
        md5['batches.meta'] = _pickle(folder / 'batches.meta', {'label_names': [f'c{i}' for i in range(10)]})
    else:
        folder = root / 'cifar-100-python'
        for name in ('train', 'test'):
            md5[name] = _pickle(folder / name, batch('fine_labels', num_images if name == 'train' else num_test))
        md5['meta'] = _pickle(folder / 'meta', {'fine_label_names': [f'c{i}' for i in range(100)]})
    return md5


def _clip(rng: np.random.Generator, frames: int = 16, height: int = 48, width: int = 64) -> np.ndarray:
    # a moving bright square on noise, so that consecutive frames differ as in a real video
    clip = rng.integers(0, 80, (frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        clip[t, 10:26, 2 + 2 * t:18 + 2 * t] = 230
    return clip


def write_videos(root: Path, rng: np.random.Generator) -> None:
    """mmaction2 VideoDataset: ``videos/<class>/<name>.mp4`` and ``{train,val}.txt`` (``path label``)."""
    splits = {'train': [('ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.mp4', 0), ('YoYo/v_YoYo_g08_c01.mp4', 100)],
              'val': [('Archery/v_Archery_g01_c01.mp4', 2), ('Rowing/v_Rowing_g01_c02.mp4', 75)]}
    for split, items in splits.items():
        for name, _ in items:
            path = root / 'videos' / name
            path.parent.mkdir(parents=True, exist_ok=True)
            clip = _clip(rng)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 25, (clip.shape[2], clip.shape[1]))
            assert writer.isOpened(), 'OpenCV cannot write mp4v videos here'
            for frame in clip:
                writer.write(frame)
            writer.release()
        (root / f'{split}.txt').write_text(''.join(f'{n} {label}\n' for n, label in items))


def write_rawframes(root: Path, rng: np.random.Generator) -> None:
    """mmaction2 RawframeDataset: ``rawframes/<class>/<video>/img_00001.jpg...``, ``{train,val}.txt``."""
    splits = {'train': [('ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01', 0), ('YoYo/v_YoYo_g08_c01', 100)],
              'val': [('Archery/v_Archery_g01_c01', 2), ('Rowing/v_Rowing_g01_c02', 75)]}
    for split, items in splits.items():
        for name, _ in items:
            clip = _clip(rng)
            for t, frame in enumerate(clip):
                path = root / 'rawframes' / name / f'img_{t + 1:05d}.jpg'
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), frame)
        (root / f'{split}.txt').write_text(''.join(f'{n} {len(clip)} {label}\n' for n, label in items))


def _save_model(path: Path, scope: str, model_cfg: dict, source: str) -> Path:
    """Build a model config with the registries of ``scope`` and save its state dict as an mmengine checkpoint."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    model.init_weights()
    torch.save({'meta': {'source': source}, 'state_dict': model.state_dict()}, path)
    return path


class TinyData:
    """Lazily written datasets and checkpoints, one of each per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._done: Dict[str, object] = {}

    def _once(self, key: str, make: Callable[[Path], object]) -> Path:
        path = self.root / key
        if key not in self._done:
            path.mkdir(parents=True, exist_ok=True)
            self._done[key] = make(path)
        return path

    def get(self, kind: str) -> Path:
        rng = np.random.default_rng(sum(map(ord, kind)))
        writers = {
            'imagenet': lambda p: write_imagenet(p, rng),
            'cub': lambda p: write_cub(p, rng),
            'cifar10': lambda p: write_cifar(p, rng, 10),
            'cifar100': lambda p: write_cifar(p, rng, 100),
            'video': lambda p: write_videos(p, rng),
            'rawframes': lambda p: write_rawframes(p, rng),
        }
        if kind not in writers:
            raise KeyError(f'no tiny dataset of kind {kind!r}; valid: {sorted(writers)}')
        return self._once(kind, writers[kind])

    def md5(self, kind: str) -> Dict[str, str]:
        """md5 of the files of a CIFAR dataset written by :meth:`get`."""
        self.get(kind)
        return self._done[kind]

    def imagenet_resnet50(self) -> Path:
        """An mmpretrain ImageNet ResNet-50 classifier checkpoint (1000 classes)."""
        config = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
        return self._once('ckpt_in1k', lambda p: _save_model(
            p / 'resnet50_in1k.pth', 'mmpretrain', get_config(config).model, config)) / 'resnet50_in1k.pth'

    def kinetics_recognizer(self, model_cfg: ConfigDict) -> Path:
        """A Kinetics-400 checkpoint of the recognizer ``model_cfg`` describes, without its blocks (``plugins``)
        and with a 400-class head: what a UCF-101 config loads with ``load_from``. One per distinct network."""
        plain = copy.deepcopy(model_cfg.to_dict())
        plain['backbone'].pop('plugins', None)
        plain['cls_head']['num_classes'] = 400
        key = 'ckpt_k400_' + hashlib.md5(repr(sorted(plain.items())).encode()).hexdigest()[:12]
        return self._once(key, lambda p: _save_model(p / 'k400.pth', 'mmaction', plain, 'plain network')) / 'k400.pth'


@pytest.fixture(autouse=True)
def restore_default_scope():
    """Runner.from_cfg sets mmengine's default scope for the process; give the next test the one it had."""
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory) -> TinyData:
    return TinyData(tmp_path_factory.mktemp('tiny_data'))
