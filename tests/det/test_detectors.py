"""Nonlocal blocks in mmdetection's Faster and Mask R-CNN R-50 FPN, built from mmdetection's shipped configs.

Three ways in, each for NL and SNL:

* mmdetection's own ``plugins=`` of its ResNet: a block after the 3x3 convolution of every res4 block
  (``after_conv2``);
* the package's insertion, Wang et al.'s placement (one block right before the last res4 block):
  ``snl_mm.PluginBackbone`` around mmdetection's ResNet (``after='layer3.4'``), or stage addressing on a backbone
  without plugins of its own (mmpretrain's ResNet, whose keys are the same).

The configs of ``configs/coco`` train one iteration (and evaluate) on a tiny COCO-format dataset through
mmdetection's own dataset, pipeline and COCO metric.
"""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint

from snl_mm.blocks import find_blocks
from tests.helpers import load_config, randomise_, randomise_norms_

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {'faster': 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
           'mask': 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'}
RES4 = (False, False, True, False)
ABBR = {'NLBlock': 'nl_block', 'SNLBlock': 'snl_block'}


def shipped_model(detector: str) -> dict:
    """mmdetection's detector config, its backbone without the ImageNet download (no network here)."""
    cfg = get_config(SHIPPED[detector])
    cfg.model.backbone.init_cfg = None
    return copy.deepcopy(cfg.model)


def mmdet_plugins(backbone: dict, block: str) -> dict:
    return dict(backbone, plugins=[dict(cfg=dict(type=block, reduction=2), stages=RES4, position='after_conv2')])


def plugin_backbone(backbone: dict, block: str) -> dict:
    return dict(type='snl_mm.PluginBackbone', backbone=backbone,
                plugins=[dict(cfg=dict(type=block, reduction=2), after='layer3.4')])


def stage_addressing(backbone: dict, block: str) -> dict:
    backbone = {k: v for k, v in backbone.items() if k not in ('type', 'init_cfg')}
    return dict(backbone, type='mmpretrain.ResNet', plugins=[
        dict(cfg=dict(type=block, reduction=2), stages=RES4, blocks=(-2, ), position='after_block')])


#: way in -> (backbone config, expected {path: in_channels} of the blocks in the backbone)
PLACEMENTS = {
    'mmdet-plugins': (mmdet_plugins, {f'layer3.{i}.{{abbr}}': 256 for i in range(6)}),
    'plugin-backbone': (plugin_backbone, {'layer3.4.{abbr}': 1024}),
    'stage-addressing': (stage_addressing, {'layer3.4.{abbr}': 1024}),
}


def backbone_blocks(backbone) -> dict:
    """``{path: block}`` of the nonlocal blocks of a backbone (``snl_mm.PluginBackbone`` returns the backbone it
    wraps: no prefix of its own)."""
    return find_blocks(backbone)


def build(model_cfg: dict):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    return MODELS.build(model_cfg)


# each way in with each detector, NL and SNL alternating (each block goes in every way once)
CASES = [('faster', 'NLBlock', 'mmdet-plugins'), ('faster', 'SNLBlock', 'plugin-backbone'),
         ('faster', 'NLBlock', 'stage-addressing'), ('mask', 'SNLBlock', 'mmdet-plugins'),
         ('mask', 'NLBlock', 'plugin-backbone'), ('mask', 'SNLBlock', 'stage-addressing')]


@pytest.mark.parametrize('detector,block,placement', CASES)
def test_blocks_in_shipped_detectors(detector, block, placement, mmdet_models):
    """The blocks sit where asked with the channels of that place; every other key is the plain detector's,
    and freshly built (blocks at the identity) the detector computes the plain detector's features."""
    model_cfg = shipped_model(detector)
    plain = build(copy.deepcopy(model_cfg)).eval()
    make_backbone, expected = PLACEMENTS[placement]
    model_cfg.backbone = make_backbone(model_cfg.backbone, block)
    model = build(model_cfg).eval()

    blocks = backbone_blocks(model.backbone)
    assert {path: b.in_channels for path, b in blocks.items()} == \
        {path.format(abbr=ABBR[block]): c for path, c in expected.items()}
    assert {type(b).__name__ for b in blocks.values()} == {block}
    keys = [k for k in model.state_dict() if not any(f'.{p}.' in f'.{k}' for p in blocks)]
    assert sorted(keys) == sorted(plain.state_dict())

    randomise_norms_(plain, seed=0)
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(any(f'backbone.{p}.' in k for p in blocks) for k in missing)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for ours, theirs in zip(model.extract_feat(x), plain.extract_feat(x)):
            torch.testing.assert_close(ours, theirs)


def test_nonlocal2d_checkpoint_loads_into_nlblock(mmdet_models, tmp_path):
    """A Mask R-CNN trained with mmcv's NonLocal2d in mmdetection's own plugins (res4, after_conv2) loads with
    every key into the package's NLBlock named as mmcv's (``nonlocal_block``), and computes the same."""
    model_cfg = shipped_model('mask')
    theirs_cfg = copy.deepcopy(model_cfg)
    theirs_cfg.backbone.plugins = [dict(cfg=dict(type='NonLocal2d', reduction=2), stages=RES4,
                                        position='after_conv2')]
    theirs = randomise_norms_(build(theirs_cfg).eval(), seed=1)
    from mmcv.cnn import NonLocal2d
    for i, block in enumerate(m for m in theirs.modules() if isinstance(m, NonLocal2d)):
        randomise_(block, std=0.05, seed=10 + i)  # conv_out starts at zero: give every weight a value
    torch.save(dict(state_dict=theirs.state_dict(), meta=dict()), tmp_path / 'nonlocal2d.pth')

    ours_cfg = copy.deepcopy(model_cfg)
    ours_cfg.backbone = stage_addressing(model_cfg.backbone, 'NLBlock')
    ours_cfg.backbone.plugins = [dict(cfg=dict(type='NLBlock', reduction=2, norm_cfg=None), stages=RES4,
                                      position='after_conv2', name='nonlocal_block')]
    ours = build(ours_cfg).eval()
    assert [type(b).__name__ for b in find_blocks(ours).values()] == ['NLBlock'] * 6
    load_checkpoint(ours, str(tmp_path / 'nonlocal2d.pth'), strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(ours.extract_feat(x), theirs.extract_feat(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


class Record(Hook):
    """The backbone's nonlocal blocks' parameters before and after training, and the validation metrics."""

    def before_train(self, runner) -> None:
        self.before = self._state(runner)

    def after_train(self, runner) -> None:
        self.after = self._state(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics = dict(metrics or {})

    @staticmethod
    def _state(runner):
        return {f'{path}.{name}': p.detach().clone()
                for path, block in find_blocks(runner.model.backbone).items()
                for name, p in block.named_parameters()}


def tiny_run(config: Path, root: Path, work_dir: Path) -> Config:
    """The config with its data on the tiny dataset: batches of 2 images scaled to 128x96, one epoch of one
    iteration, then the COCO metric on the same 2 images; nothing downloaded, no checkpoint written."""
    cfg = load_config(config)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=2, num_workers=0, persistent_workers=False)
        dataset = cfg[loader].dataset
        dataset.update(data_root=str(root), ann_file='annotations/instances.json', data_prefix=dict(img='images/'),
                       serialize_data=False)  # its gc.collect() takes 0.4 s per dataset in this process
        for transform in dataset.pipeline:
            if transform.type == 'Resize':
                transform.scale = (128, 96)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = str(root / 'annotations' / 'instances.json')
    backbone = cfg.model.backbone.get('backbone', cfg.model.backbone)
    # no ImageNet weights here; their last norm of each residual branch is not zero, as mmdetection's init
    # (zero_init_residual) makes it: keep gradients flowing into the branches (and their after_conv2 blocks)
    backbone.update(init_cfg=None, zero_init_residual=False)
    # after one iteration no class scores 0.05 yet: keep the 10 best boxes of each image for the metric
    cfg.model.test_cfg.rcnn.update(score_thr=0.0, max_per_img=10)
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint = None
    cfg.update(work_dir=str(work_dir), log_level='WARNING', randomness=dict(seed=0), launcher='none')
    return cfg


COCO_CONFIGS = sorted(p.name for p in (REPO / 'configs' / 'coco').glob('*.py'))


def test_coco_config_set():
    assert COCO_CONFIGS == sorted(f'{d}-rcnn_r50-{b}_fpn_1x_coco.py'
                                  for d in ('faster', 'mask') for b in ('nl', 'snl', 'snl-c2-res4'))


@pytest.mark.parametrize('name', COCO_CONFIGS)
def test_coco_config_trains_and_evaluates(name, mmdet_models, coco_root, tmp_path):
    cfg = tiny_run(REPO / 'configs' / 'coco' / name, coco_root, tmp_path)
    runner = Runner.from_cfg(cfg)
    record = Record()
    runner.register_hook(record)
    runner.train()

    expected = 6 if 'c2-res4' in name else 1
    blocks = backbone_blocks(runner.model.backbone)
    assert len(blocks) == expected and {type(b).__name__ for b in blocks.values()} == \
        {'NLBlock' if '-nl_' in name else 'SNLBlock'}
    assert runner.iter == 1
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss)), loss
    changed = [k for k in record.before if not torch.equal(record.before[k], record.after[k])]
    assert changed, 'the blocks did not train'
    # mmdetection's COCO metric evaluated the predictions on the 2 images
    assert 'coco/bbox_mAP' in record.metrics, record.metrics
    assert ('coco/segm_mAP' in record.metrics) == name.startswith('mask')
