"""Every Cityscapes config: it loads, and (with mmsegmentation) builds, trains one iteration and evaluates
mIoU through the real mmsegmentation pipeline on a tiny Cityscapes-format dataset written by the test."""
import copy
import math
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.hooks import Hook

from tests.helpers import load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'cityscapes'
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob('*.py'))
HEAD_BLOCKS = {
    'nl_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'NLBlock',
    'ns_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'NSBlock',
    'a2-double-attention_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'A2Block',
    'a2_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'A2Block',  # the former name, inheriting the line above
    'cgnl_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'CGNLBlock',
    'cc_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'CCBlock',
    'snl_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'SNLBlock',
    'gc_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'GCBlock',
    'dnl_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'DNLBlock',
    'linear-attention_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'LinearAttentionBlock',
}
#: heads that keep their block under the upstream head's attribute (``NonlocalHead(block_name=...)``), so that the
#: zoo's checkpoints load unchanged; the others under NLHead's ``nl_block``
BLOCK_NAMES = {'gc_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'gc_block',
               'dnl_r50-d8_4xb2-40k_cityscapes-512x1024.py': 'dnl_block'}
#: configs with a head of another structure than the FCN's (the package's version of the upstream head):
#: ``{config: (head type, {head attribute: block type})}``
FAMILY_HEADS = {
    'da_r50-d8_4xb2-40k_cityscapes-512x1024.py': ('snl_mm.DAHead', {'pam': 'PAMBlock', 'cam': 'CAMBlock'}),
    'ema_r50-d8_4xb2-80k_cityscapes-512x1024.py': ('snl_mm.EMAHead', {'ema_block': 'EMABlock'}),
    'ann_r50-d8_4xb2-40k_cityscapes-512x1024.py': ('snl_mm.ANNHead', {'fusion': 'AFNBBlock', 'context': 'APNBBlock'}),
    'isa_r50-d8_4xb2-40k_cityscapes-512x1024.py': ('snl_mm.ISAHead', {'isa_block': 'ISABlock'}),
}
#: the model zoo's schedule where it is not 40k iterations
MAX_ITERS = {'ema_r50-d8_4xb2-80k_cityscapes-512x1024.py': 80000}
BASELINE = 'fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
BACKBONE_PLUGINS = 'fcn_r50-d8-snl-c4_4xb2-40k_cityscapes-512x1024.py'

#: the tests' sizes: resize to 256x128 (from 2048x1024), crop 64x128 (from 512x1024)
TEST_SCALE = (256, 128)
TEST_CROP = (64, 128)
#: channel width of the tests' ResNet-50-D8 (64 upstream): same depth, dilations and heads, 1/16 the FLOPs
TEST_WIDTH = 16


def test_config_set():
    """The baseline, one head config per block and the backbone-plugin config, nothing unexpected."""
    assert set(CONFIGS) == set(HEAD_BLOCKS) | set(FAMILY_HEADS) | {BASELINE, BACKBONE_PLUGINS}


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads(name):
    """The upstream Cityscapes setting is inherited (mmseg:: base) and the block sits where intended."""
    cfg = Config.fromfile(str(CONFIG_DIR / name))
    assert cfg.custom_imports == dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmseg'
    assert cfg.data_root == 'data/cityscapes/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.type == 'CityscapesDataset'
        assert loader.dataset.data_root == cfg.data_root
    assert cfg.crop_size == (512, 1024) and cfg.model.data_preprocessor.size == (512, 1024)
    assert cfg.train_cfg.max_iters == MAX_ITERS.get(name, 40000) and cfg.train_dataloader.batch_size == 2
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.depth) == ('ResNetV1c', 50)
    assert backbone.dilations == (1, 1, 2, 4) and backbone.strides == (1, 2, 1, 1)  # output stride 8
    assert cfg.model.pretrained == 'open-mmlab://resnet50_v1c'
    head = cfg.model.decode_head
    if name in FAMILY_HEADS:
        # res5, or res4 and res5 (ANN fuses both)
        assert head.type == FAMILY_HEADS[name][0] and head.in_channels in (2048, [1024, 2048])
        assert 'plugins' not in backbone
        return
    assert (head.in_channels, head.channels, head.num_convs, head.concat_input) == (2048, 512, 2, True)
    if name in HEAD_BLOCKS:
        assert head.type == 'snl_mm.NonlocalHead'
        assert head.block.type == HEAD_BLOCKS[name]
        assert head.get('block_name', 'nl_block') == BLOCK_NAMES.get(name, 'nl_block')
        assert 'plugins' not in backbone
    else:
        assert head.type == 'FCNHead'
    if name == BACKBONE_PLUGINS:
        (plugin, ) = backbone.plugins
        assert plugin.cfg.type == 'SNLBlock' and plugin.cfg.act_cfg is None  # identity init, trainable
        assert plugin.stages == (False, False, True, False) and plugin.position == 'after_conv3'
    if name == 'snl_r50-d8_4xb2-40k_cityscapes-512x1024.py':
        # the official SNL head: channels 512, one unit, reduction 2, ReLU, the official unit's init
        assert (head.block.reduction, head.block.act_cfg) == (2, dict(type='ReLU'))
        assert [c['type'] for c in head.block.init_cfg] == ['Kaiming', 'Constant']


class _KeepMetrics(Hook):
    """Keeps the metrics of the last validation."""

    def __init__(self):
        self.metrics = None

    def after_val_epoch(self, runner, metrics=None):
        self.metrics = metrics


def _tiny(cfg: Config, data_root: str, work_dir: str) -> Config:
    """The config at test sizes: same model and pipeline, tiny images, one iteration, no network."""
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    cfg.model.pretrained = None  # open-mmlab://resnet50_v1c needs the network
    cfg.model.data_preprocessor.size = TEST_CROP
    # every channel count scales with the backbone width; the layout of the model stays the same
    scale = TEST_WIDTH / cfg.model.backbone.get('base_channels', 64)
    cfg.model.backbone.update(stem_channels=TEST_WIDTH, base_channels=TEST_WIDTH)
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        head.in_channels = [int(c * scale) for c in head.in_channels] if isinstance(head.in_channels, list) \
            else int(head.in_channels * scale)
        head.channels = int(head.channels * scale)
        # DAHead's, EMAHead's, ANNHead's, ISAHead's inner widths
        for key in ('pam_channels', 'ema_channels', 'project_channels', 'isa_channels'):
            if key in head:
                head[key] = int(head[key] * scale)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[loader]
        loader.dataset.data_root = data_root
        loader.dataset.serialize_data = False  # its gc.collect() takes 0.4 s per dataset in this process
        loader.num_workers = 0
        loader.persistent_workers = False
        for transform in loader.dataset.pipeline:
            if transform.type in ('RandomResize', 'Resize'):
                transform.scale = TEST_SCALE
            if transform.type == 'RandomCrop':
                transform.crop_size = TEST_CROP
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1)
    cfg.param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=1, by_epoch=False)]
    cfg.default_hooks.checkpoint = None  # no 100 MB checkpoint per config
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains_and_evaluates(name, mmseg, cityscapes_root, tmp_path):
    from mmengine.runner import Runner

    cfg = _tiny(load_config(CONFIG_DIR / name), cityscapes_root, str(tmp_path))
    runner = Runner.from_cfg(cfg)
    keep = _KeepMetrics()
    runner.register_hook(keep)
    model = runner.model
    head = model.decode_head
    blocks = []
    if name in HEAD_BLOCKS:
        assert type(head).__name__ == 'NonlocalHead'
        block = getattr(head, BLOCK_NAMES.get(name, 'nl_block'))
        assert type(block).__name__ == HEAD_BLOCKS[name]
        assert block.in_channels == head.channels == 512 * TEST_WIDTH // 64
        blocks = [block]
    if name in FAMILY_HEADS:
        assert type(head).__name__ == FAMILY_HEADS[name][0].split('.')[1]
        blocks = [getattr(head, attr) for attr in FAMILY_HEADS[name][1]]
        assert [type(b).__name__ for b in blocks] == list(FAMILY_HEADS[name][1].values())
    if name == BACKBONE_PLUGINS:
        blocks = [m for m in model.backbone.layer3.modules() if type(m).__name__ == 'SNLBlock']
        res4_channels = 1024 * TEST_WIDTH // 64
        assert len(blocks) == 6 and all(b.in_channels == res4_channels for b in blocks)
        assert not any(type(m).__name__ == 'SNLBlock' for layer in
                       (model.backbone.layer1, model.backbone.layer2, model.backbone.layer4)
                       for m in layer.modules())
    # the largest gradient each block's parameters receive in the training step
    grad_max = [0.0] * len(blocks)

    def record(i):
        def hook(grad):
            grad_max[i] = max(grad_max[i], grad.abs().max().item())
        return hook

    for i, block in enumerate(blocks):
        for p in block.parameters():
            if p.requires_grad:  # EMA's mid convolution is frozen, as upstream
                p.register_hook(record(i))

    runner.train()

    assert runner.iter == 1
    assert keep.metrics is not None and 'mIoU' in keep.metrics
    miou = keep.metrics['mIoU']
    assert math.isfinite(miou) and 0.0 <= miou <= 100.0
    # the blocks took part in the step: their parameters received non-zero gradients
    assert all(g > 0 for g in grad_max), grad_max
