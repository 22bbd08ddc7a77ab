"""tools/train.py and tools/test.py: command-line arguments become the config OpenMMLab's tools would make."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from snl_mm.compat.resume import NoReadableCheckpointError

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / 'configs/demo/preresnet20-snl_relation.py')
UCF = str(REPO / 'configs/ucf101/i3d_r50-snl_k400-pretrained_8xb8-32x2x1-100e_ucf101-split1-rgb.py')


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'snl_mm_tools_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = load_tool('train')
test_tool = load_tool('test')


def parse(tool, monkeypatch, *argv):
    monkeypatch.setattr(sys, 'argv', ['tool', *argv])
    return tool.parse_args()


def test_train_work_dir_resume_and_cfg_options(monkeypatch, tmp_path):
    args = parse(train_tool, monkeypatch, DEMO, '--work-dir', str(tmp_path), '--resume', 'ckpt.pth',
                 '--cfg-options', 'train_cfg.max_epochs=2', 'model.backbone.plugins.0.cfg.reduction=4')
    cfg = train_tool.merge_args(Config.fromfile(DEMO), args)
    assert cfg.work_dir == str(tmp_path) and cfg.launcher == 'none'
    assert cfg.resume is True and cfg.load_from == 'ckpt.pth'
    assert cfg.train_cfg.max_epochs == 2 and cfg.model.backbone.plugins[0].cfg.reduction == 4

    args = parse(train_tool, monkeypatch, DEMO, '--no-validate', '--seed', '3', '--launcher', 'pytorch')
    cfg = train_tool.merge_args(Config.fromfile(DEMO), args)
    assert cfg.val_cfg is None and cfg.val_dataloader is None and cfg.randomness.seed == 3
    assert cfg.work_dir.endswith('work_dirs/preresnet20-snl_relation') and cfg.launcher == 'pytorch'


def test_train_bare_resume_keeps_pretrained_weights_in_a_fresh_work_dir(monkeypatch, tmp_path):
    args = parse(train_tool, monkeypatch, UCF, '--work-dir', str(tmp_path), '--resume')
    cfg = train_tool.merge_args(Config.fromfile(UCF), args)
    assert cfg.resume is False and cfg.load_from.endswith('kinetics400-rgb_20220812-e213c223.pth')

    torch.save(dict(meta=dict(epoch=3, iter=30), state_dict={}, message_hub={}, optimizer={}),
               tmp_path / 'epoch_3.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    cfg = train_tool.merge_args(Config.fromfile(UCF), args)
    assert cfg.resume is True and cfg.load_from is None  # the Runner takes the work dir's latest checkpoint

    # a previous run whose only checkpoint is cut short: a clear error, not the pretrained weights
    (tmp_path / 'epoch_3.pth').write_bytes(b'')
    with pytest.raises(NoReadableCheckpointError, match='epoch_3.pth: it is empty'):
        train_tool.merge_args(Config.fromfile(UCF), args)


def test_train_mmpretrain_dataloader_defaults(monkeypatch):
    args = parse(train_tool, monkeypatch, DEMO)
    cfg = Config.fromfile(DEMO)
    cfg.val_dataloader.num_workers = 2
    cfg = train_tool.merge_args(cfg, args)
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate')
    assert cfg.train_dataloader.persistent_workers is False  # no workers: torch refuses persistent ones
    assert cfg.val_dataloader.persistent_workers is True
    args = parse(train_tool, monkeypatch, DEMO, '--no-persistent-workers', '--no-pin-memory')
    cfg = Config.fromfile(DEMO)
    cfg.val_dataloader.num_workers = 2
    cfg = train_tool.merge_args(cfg, args)
    assert cfg.val_dataloader.persistent_workers is False and cfg.val_dataloader.pin_memory is False

    # mmaction2's tools add no dataloader defaults
    cfg = train_tool.merge_args(Config.fromfile(UCF), parse(train_tool, monkeypatch, UCF))
    assert 'collate_fn' not in cfg.train_dataloader


def test_train_bad_flags(monkeypatch):
    cfg = Config.fromfile(DEMO)
    if train_tool.get_device() == 'cpu':
        with pytest.raises(ValueError, match='--amp'):
            train_tool.merge_args(cfg, parse(train_tool, monkeypatch, DEMO, '--amp'))
    else:
        cfg = train_tool.merge_args(cfg, parse(train_tool, monkeypatch, DEMO, '--amp'))
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    cfg = Config.fromfile(DEMO)
    assert 'auto_scale_lr' not in cfg
    with pytest.raises(KeyError, match='auto_scale_lr'):
        train_tool.merge_args(cfg, parse(train_tool, monkeypatch, DEMO, '--auto-scale-lr'))


def test_test_tool_arguments(monkeypatch, tmp_path):
    args = parse(test_tool, monkeypatch, DEMO, 'ckpt.pth', '--work-dir', str(tmp_path), '--show-dir',
                 str(tmp_path / 'vis'), '--out', 'm.json', '--out-item', 'metrics')
    cfg = test_tool.merge_args(Config.fromfile(DEMO), args)
    assert cfg.load_from == 'ckpt.pth' and cfg.resume is False and cfg.work_dir == str(tmp_path)
    vis = cfg.default_hooks.visualization
    assert vis.enable is True and vis.out_dir == str(tmp_path / 'vis')
    with pytest.raises(ValueError, match='--out'):
        parse(test_tool, monkeypatch, DEMO, 'ckpt.pth', '--out-item', 'metrics')
    # mmaction2's runtime has no visualization hook: say so instead of failing later
    with pytest.raises(KeyError, match='visualization'):
        test_tool.merge_args(Config.fromfile(UCF), parse(test_tool, monkeypatch, UCF, 'c.pth', '--show-dir', 'v'))
