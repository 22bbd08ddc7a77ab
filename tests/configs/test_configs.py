"""Every config under configs/ loads, builds its model, trains one iteration and validates one step.

Each config runs through mmengine's ``Runner`` with its own model, dataset class and pipeline, on a tiny
dataset written in that dataset's format (``conftest.py``). Only sizes shrink: batch size 2, crops and
resizes scaled down (224 -> 32), clips of 8 frames; every transform and model type stays the config's.
The fine-tuning configs load a checkpoint of the upstream network they start from (an ImageNet ResNet-50 for
CUB; for UCF-101 the config's own recognizer without its blocks and with a 400-class Kinetics head, built by the
upstream classes), and the test checks the backbone weights came from it. The task bases (``configs/_base_``) are
parts of configs, not configs. The segmentation configs (``configs/cityscapes``) have their own tests in
``tests/seg``, the detection configs (``configs/coco``) in ``tests/det``.
"""
import argparse
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmpretrain.datasets import CIFAR10, CIFAR100

from snl_mm.blocks import find_blocks
from tests.helpers import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO / 'configs'
OWN_TESTS = ('cityscapes', 'coco')  # tested by tests/seg and tests/det
BASES = '_base_'  # parts that configs inherit, not configs
ALL_CONFIGS = sorted(
    str(p.relative_to(REPO)) for p in CONFIG_ROOT.rglob('*.py')
    if p.relative_to(CONFIG_ROOT).parts[0] not in OWN_TESTS and BASES not in p.relative_to(CONFIG_ROOT).parts)

#: dataset class named by a config -> kind of tiny dataset (conftest.TinyData)
KINDS = {
    'ImageNet': 'imagenet',
    'CUB': 'cub',
    'CIFAR10': 'cifar10',
    'CIFAR100': 'cifar100',
    'VideoDataset': 'video',
    'RawframeDataset': 'rawframes',
    'snl_mm.RelationDataset': 'relation',
    # the other generated tasks of configs/relation: sized by num_samples as well
    'snl_mm.MajorityDataset': 'relation',
    'snl_mm.PathfinderDataset': 'relation',
    'snl_mm.VideoRelationDataset': 'relation',
}
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
SIZE_KEYS = ('scale', 'crop_size', 'input_size', 'size', 'scale_range')


def kind_of(cfg: Config) -> str:
    dataset_type = cfg.train_dataloader.dataset.type
    if dataset_type not in KINDS:
        raise KeyError(f'no tiny dataset for dataset type {dataset_type!r}: add one to tests/configs '
                       f'(known: {sorted(KINDS)})')
    return KINDS[dataset_type]


def shrink_size(value):
    """224 -> 32, 256 -> 36, 448 -> 64, 600 -> 85, at least 32 (112 -> 32); sizes of 32 and less and -1 ("keep
    ratio") stay."""
    if isinstance(value, bool) or not isinstance(value, (int, tuple, list)):
        return value
    if isinstance(value, int):
        return max(32, value * 32 // 224) if value > 32 else value
    return type(value)(shrink_size(v) for v in value)


def shrink_pipeline(pipeline: List[dict]) -> None:
    for transform in pipeline:
        for key in SIZE_KEYS:
            if key in transform:
                transform[key] = shrink_size(transform[key])
        if transform['type'] == 'SampleFrames':
            transform['clip_len'] = min(transform['clip_len'], 8)
            transform['frame_interval'] = 1
            transform['num_clips'] = min(transform['num_clips'], 2)


def point_at_data(dataset: ConfigDict, kind: str, root: Path, split: str) -> None:
    if kind in ('imagenet', 'cub', 'cifar10', 'cifar100'):
        dataset.data_root = str(root)
    elif kind == 'video':
        dataset.ann_file = str(root / f'{split}.txt')
        dataset.data_prefix = dict(video=str(root / 'videos'))
    elif kind == 'rawframes':
        dataset.ann_file = str(root / f'{split}.txt')
        dataset.data_prefix = dict(img=str(root / 'rawframes'))
    elif kind == 'relation':
        dataset.num_samples = 2


def expected_blocks(cfg: Config) -> Dict[str, int]:
    """``{block type: count}`` the config's plugin entries ask for."""
    counts: Dict[str, int] = {}
    for entry in cfg.model.backbone.get('plugins') or []:
        if 'stages' not in entry:  # an entry naming one module: `after` or `replace`
            n = 1
        elif all(isinstance(b, int) for b in entry['blocks']):
            n = sum(entry['stages']) * len(entry['blocks'])
        else:
            n = sum(len(b) for b in entry['blocks'])
        counts[entry['cfg']['type']] = counts.get(entry['cfg']['type'], 0) + n
    return counts


class CheckPretrained(Hook):
    """Before the first iteration: every tensor of the checkpoint's backbone is in the model's backbone, but those of
    the modules a plugin entry replaced (``replaced``: their paths in the backbone)."""

    def __init__(self, checkpoint: Path, replaced: List[str]) -> None:
        self.state = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
        self.replaced = tuple(f'backbone.{path}.' for path in replaced)
        self.loaded = 0

    def before_train(self, runner) -> None:
        model = runner.model.state_dict()
        for key, value in self.state.items():
            if key.startswith('backbone.') and not key.startswith(self.replaced):
                assert key in model, f'{key} of the checkpoint is not a key of the model'
                torch.testing.assert_close(model[key], value, rtol=0, atol=0, msg=f'{key} was not loaded')
                self.loaded += 1


def tiny_config(config: str, tiny_data, work_dir: Path, monkeypatch) -> tuple:
    cfg = load_config(REPO / config)
    kind = kind_of(cfg)
    root = tiny_data.get(kind) if kind != 'relation' else None
    if kind in ('cifar10', 'cifar100'):
        # the CIFAR classes check the files' md5 against the official archive: check them against ours
        md5 = tiny_data.md5(kind)
        cls = CIFAR10 if kind == 'cifar10' else CIFAR100
        monkeypatch.setattr(cls, 'train_list', [[name, md5[name]] for name, _ in cls.train_list])
        monkeypatch.setattr(cls, 'test_list', [[name, md5[name]] for name, _ in cls.test_list])

    for loader, split in zip(LOADERS, ('train', 'val', 'val')):
        cfg[loader].batch_size = 2
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        dataset = cfg[loader].dataset
        point_at_data(dataset, kind, root, split)
        dataset.indices = 2
        dataset.serialize_data = False  # its gc.collect() takes 0.4 s per dataset in this process
        shrink_pipeline(dataset.pipeline)

    backbone = cfg.model.backbone
    if 'img_size' in backbone:  # transformers: patch grid and position embeddings of the shrunk frames
        backbone.img_size = shrink_size(backbone.img_size)
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    if 'val_begin' in cfg.train_cfg:
        cfg.train_cfg.val_begin = 1
    cfg.default_hooks.checkpoint = None
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)
    cfg.launcher = 'none'

    checkpoint = None
    backbone_init = cfg.model.backbone.get('init_cfg')
    if isinstance(backbone_init, dict) and backbone_init.get('type') == 'Pretrained':
        checkpoint = tiny_data.imagenet_resnet50()
        backbone_init.checkpoint = str(checkpoint)
    if cfg.get('load_from'):
        checkpoint = tiny_data.kinetics_recognizer(cfg.model)
        cfg.load_from = str(checkpoint)
    return cfg, checkpoint


def test_every_task_folder_is_walked():
    """The walk sees every task folder; a config whose dataset has no tiny twin fails in the test below."""
    folders = {Path(c).parts[1] for c in ALL_CONFIGS}
    assert folders == {p.name for p in CONFIG_ROOT.iterdir()
                       if p.is_dir() and p.name not in OWN_TESTS + (BASES, )}
    assert {'imagenet', 'cub', 'cifar', 'ucf101', 'demo'} <= folders
    assert len(ALL_CONFIGS) >= 70, ALL_CONFIGS


@pytest.mark.parametrize('config', ALL_CONFIGS)
def test_config_trains_and_validates(config, tiny_data, tmp_path, monkeypatch):
    cfg, checkpoint = tiny_config(config, tiny_data, tmp_path, monkeypatch)
    runner = Runner.from_cfg(cfg)

    blocks = find_blocks(runner.model)
    found: Dict[str, int] = {}
    for block in blocks.values():
        found[type(block).__name__] = found.get(type(block).__name__, 0) + 1
    assert found == expected_blocks(cfg), f'blocks in the model: {list(blocks)}'

    # the parameters that make a fresh block the identity (its zero-initialised norm or gamma)
    zero_init = {
        name: [n for n, p in block.named_parameters() if p.requires_grad and not p.detach().any()]
        for name, block in blocks.items()
    }
    assert all(zero_init.values()), f'a fresh block has no zero-initialised parameter: {zero_init}'

    replaced = [e['replace'] for e in cfg.model.backbone.get('plugins') or [] if 'replace' in e]
    check = CheckPretrained(checkpoint, replaced) if checkpoint else None
    if check:
        runner.register_hook(check)
    runner.train()

    # every block learns: one step moves its zero-initialised parameters (a block whose gradient is cut at
    # the identity start, e.g. by an activation whose derivative is 0 at 0, stays the identity forever)
    for name, block in blocks.items():
        params = dict(block.named_parameters())
        assert any(params[n].detach().any() for n in zero_init[name]), \
            f'{name} ({type(block).__name__}) got no gradient in its first step: {zero_init[name]} are still 0'

    assert runner.iter == 1 and runner.epoch == 1
    val = {k: v for k, v in runner.message_hub.log_scalars.items() if k.startswith('val/')}
    assert val, 'the validation step reported no metric'
    assert torch.isfinite(torch.tensor(runner.message_hub.get_scalar('train/loss').current()))
    if check:
        assert check.loaded > 100, f'only {check.loaded} backbone tensors were compared'


@pytest.mark.parametrize('suffix, option', [
    ('r1', 'model.backbone.plugins.0.cfg.reduction=1'),
    ('r4', 'model.backbone.plugins.0.cfg.reduction=4'),
    ('stage2', 'model.backbone.plugins.0.stages=(False,True,False)'),
    ('stage3', 'model.backbone.plugins.0.stages=(False,False,True)'),
    ('x3', 'model.backbone.plugins.0.stages=(True,True,True)'),
])
def test_ablation_configs_equal_their_documented_cfg_options(suffix, option):
    """README.md (Reproducing the paper): each ablation config is the main config with one --cfg-options
    line."""
    docs = (REPO / 'README.md').read_text()
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    options = parser.parse_args(['--cfg-options', option]).cfg_options
    for block in ('nl', 'ns', 'a2', 'cgnl', 'snl'):
        ablation = f'cifar/ablation/preresnet56-{block}-{suffix}_8xb16-300e_cifar100.py'
        assert f'`{ablation}`' in docs, f'{ablation} is not listed in README.md'
        main = Config.fromfile(str(CONFIG_ROOT / f'cifar/preresnet56-{block}_8xb16-300e_cifar100.py'))
        main.merge_from_dict(options)
        assert main.model.to_dict() == Config.fromfile(str(CONFIG_ROOT / ablation)).model.to_dict()
    assert option.split('=')[0] in docs
