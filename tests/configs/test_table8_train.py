"""The paper's Table 8 configs (R(2+1)D + SNL before the last block of res3; TimeSformer with the attention across
frames of every layer replaced by SNL) train through ``tools/train.py`` as a user runs them: one iteration on tiny
generated clips.

The config given to the tool inherits the Table 8 config and changes only sizes (``tests/configs/test_configs.py``
``tiny_config``: batch 2, 8 frames, 32 x 32 crops, the transformer's ``img_size``) and paths (the tiny videos and a
Kinetics checkpoint of the network without its block). The checkpoint the tool writes holds the trained block.
"""
import subprocess
from pathlib import Path

import pytest
import torch

from tests.configs.test_configs import REPO, tiny_config

TABLE8 = {
    'configs/ucf101/r2plus1d_r34-snl_k400-pretrained_8xb8-8x8x1-100e_ucf101-split1-rgb.py': 'layer2.2.snl_block',
    'configs/ucf101/timesformer_divST-snl_k400-pretrained_8xb8-8x32x1-100e_ucf101-split1-rgb.py':
    'transformer_layers.layers.0.attentions.0.snl_block',
}


@pytest.mark.parametrize('config, block', TABLE8.items(), ids=['r2plus1d-snl', 'timesformer-snl'])
def test_table8_config_trains_through_tools_train(config, block, tiny_data, tmp_path, monkeypatch, python,
                                                  subprocess_env):
    cfg, checkpoint = tiny_config(config, tiny_data, tmp_path / 'work', monkeypatch)
    assert checkpoint is not None, 'a Table 8 config starts from a Kinetics checkpoint'
    overrides = dict(
        train_dataloader=cfg.train_dataloader.to_dict(), val_dataloader=cfg.val_dataloader.to_dict(),
        test_dataloader=cfg.test_dataloader.to_dict(), load_from=cfg.load_from,
        train_cfg=dict(max_epochs=1, val_interval=1),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1), logger=dict(interval=1)),
        randomness=dict(seed=0), log_level='INFO')
    if 'img_size' in cfg.model.backbone:
        overrides['model'] = dict(backbone=dict(img_size=cfg.model.backbone.img_size))
    wrapper = tmp_path / 'table8_tiny.py'
    wrapper.write_text(f'_base_ = {str(REPO / config)!r}\n'
                       + ''.join(f'{k} = {v!r}\n' for k, v in overrides.items()))

    result = subprocess.run([python, 'tools/train.py', str(wrapper), '--work-dir', str(tmp_path / 'work')],
                            cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Epoch(train) [1][1/1]' in log, log[-4000:]
    assert 'Epoch(val) [1]' in log and 'acc/top1' in log, log[-4000:]

    state = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
    norm = state[f'backbone.{block}.norm.weight']
    assert torch.isfinite(norm).all() and norm.abs().sum() > 0, 'the block left the identity in its first step'
    kinetics = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    stem = next(k for k in kinetics if k.startswith('backbone.') and k.endswith('weight'))
    assert not torch.equal(state[stem], kinetics[stem]), 'one SGD step moves the pretrained weights'
    assert Path(tmp_path / 'work').is_dir()
