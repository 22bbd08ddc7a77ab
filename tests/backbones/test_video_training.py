"""mmaction2's video recognisers with a block added by config train one iteration through ``tools/train.py`` on a
tiny generated video dataset (real mp4 files through mmaction2's real pipeline)."""
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers import write_videos

SNL = "dict(type='SNLBlock', inner_channels=8)"

# (mmaction2 config, frames sampled per clip (clip_len, frame_interval, num_clips), input format, entries,
#  model overrides): the smallest network of each family and a block at the place the family takes one
CASES = {
    'tsm': ('recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py', (1, 1, 8), 'NCHW',
            f"[dict(cfg={SNL}, stages=(False, False, True, False), blocks=(-2, ))]",
            'pretrained=None, pretrained2d=False'),
    'slowfast': ('recognition/slowfast/slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py', (32, 1, 1), 'NCTHW',
                 f"[dict(cfg={SNL}, stages=(False, False, True, False), blocks=(-2, ), within='slow_path')]", ''),
    'x3d': ('recognition/x3d/x3d_s_13x6x1_facebook-kinetics400-rgb.py', (8, 1, 1), 'NCTHW',
            f"[dict(cfg={SNL}, after='layer3.4')]", ''),
    'r2plus1d': ('recognition/r2plus1d/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb.py', (8, 1, 1), 'NCTHW',
                 f"[dict(cfg={SNL}, stages=(False, True, False, False), blocks=(-1, ))]", ''),
    'timesformer': ('recognition/timesformer/timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb.py', (4, 1, 1),
                    'NCTHW', f"[dict(cfg={SNL}, replace='transformer_layers.layers.1.attentions.1')]",
                    'pretrained=None, num_frames=4, img_size=64, num_transformer_layers=2, embed_dims=96, '
                    'num_heads=4'),
}

CONFIG = '''_base_ = 'mmaction::{config}'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)
model = dict(backbone=dict(plugins={entries}, {overrides}), cls_head=dict(num_classes=2{head}))
pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len={clip_len}, frame_interval={interval}, num_clips={num_clips}),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='FormatShape', input_format='{fmt}'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    type='VideoDataset', ann_file='{root}/train.txt', data_prefix=dict(video='{root}/videos'), pipeline=pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_begin=1, val_interval=1)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9), clip_grad=None)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
load_from = None
'''


@pytest.fixture(scope='module')
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('videos')
    return write_videos(root, {'train': [('a/v_a_1.mp4', 0), ('b/v_b_1.mp4', 1)]}, frames=32)


@pytest.mark.parametrize('name', list(CASES))
def test_recognizer_with_a_block_trains_one_iteration(name, videos, tmp_path, repo_root, python, subprocess_env):
    config, (clip_len, interval, num_clips), fmt, entries, overrides = CASES[name]
    path = tmp_path / f'{name}.py'
    head = ', in_channels=96' if name == 'timesformer' else ''
    path.write_text(CONFIG.format(config=config, entries=entries, overrides=overrides or 'pretrained=None',
                                  head=head, clip_len=clip_len, interval=interval, num_clips=num_clips, fmt=fmt,
                                  root=videos))
    work_dir = tmp_path / 'work'
    proc = subprocess.run([python, str(repo_root / 'tools/train.py'), str(path), '--work-dir', str(work_dir)],
                          env=subprocess_env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    checkpoint = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=False)
    block_keys = [k for k in checkpoint['state_dict'] if '.snl_block.' in k]
    assert block_keys, 'the trained checkpoint holds the block'
    assert 'Iter(train) [1/1]' in proc.stdout + proc.stderr or 'Epoch(train) [1][1/1]' in proc.stdout + proc.stderr
