"""get_flops for every task: 2D video recognisers (TSM: one clip of num_segments frames), 3D recognisers and
segmentors; key=value --cfg-options like the other tools."""
import json
import subprocess
import sys

import pytest

from snl_mm.analysis.flops import analyze_config, model_input, model_kind

TSM = 'mmaction::recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py'
SNL_RES4 = ("dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False), position='after_block', "
            "blocks=(1, ))")


def user_config(tmp_path, base: str, plugins: bool, name: str) -> str:
    """A config as a user writes one: the upstream config, no download, an SNL block in res4 (or none)."""
    path = tmp_path / f'{name}.py'
    path.write_text(f"_base_ = '{base}'\ncustom_imports = dict(imports=['snl_mm'], allow_failed_imports=False)\n"
                    f"model = dict(backbone=dict(pretrained=None{f', plugins=[{SNL_RES4}]' if plugins else ''}))\n")
    return str(path)


def test_tsm_counts_one_clip_of_num_segments_frames(tmp_path):
    plain = analyze_config(user_config(tmp_path, TSM, False, 'tsm'), (64, 64))
    snl = analyze_config(user_config(tmp_path, TSM, True, 'tsm_snl'), (64, 64))
    assert plain.input_shape == snl.input_shape == (1, 8, 3, 64, 64)  # num_segments = 8 frames
    (block, ) = snl.blocks
    assert block.type == 'SNLBlock' and '.backbone.layer3.1.' in block.name
    flops, params = snl.added()
    assert snl.params - plain.params == params > 0
    assert snl.flops - plain.flops == flops > 0
    # the block sees the clip (N, C, T, h, w): its products run over all T * h * w = 8 * 4 * 4 positions at once
    assert block.by_operator.get('bmm', 0) > 0


def test_3d_recogniser_and_clip_length(tmp_path):
    path = tmp_path / 'video_snl.py'
    path.write_text("_base_ = '{}'\nmodel = dict(backbone=dict(plugins=[dict(cfg=dict(type='SNLBlock'), "
                    "stages=(True, ), position='after_block', blocks=(0, ))]))\n".format(
                        __import__('pathlib').Path(__file__).resolve().parents[2] /
                        'configs/relation/i3d-tiny_video-relation.py'))
    report = analyze_config(str(path), (16, 16))
    assert report.input_shape == (1, 1, 3, 8, 16, 16)  # the clip length of the config's pipeline (8)
    longer = analyze_config(str(path), (12, 16, 16))
    assert longer.input_shape == (1, 1, 3, 12, 16, 16) and longer.flops > report.flops
    assert [b.type for b in report.blocks] == ['SNLBlock']


def test_kinds_and_bad_shapes():
    from mmengine.config import ConfigDict
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(type='ImageClassifier', backbone=dict(type='snl_mm.PreResNet', depth=20),
                                  neck=dict(type='GlobalAveragePooling'),
                                  head=dict(type='LinearClsHead', num_classes=2, in_channels=64)))
    assert model_kind(model) == 'image'
    assert model_input(model, ConfigDict(), (32, 48)).shape == (1, 3, 32, 48)
    with pytest.raises(ValueError, match='has frames'):
        model_input(model, ConfigDict(), (8, 32, 32))
    with pytest.raises(ValueError, match=r'\(H, W\) or \(T, H, W\)'):
        model_input(model, ConfigDict(), (32, ))


def test_segmentor(repo_root):
    from snl_mm.utils import mmseg_available
    if not mmseg_available():
        pytest.skip('mmsegmentation needs a compiled mmcv (tools/build_mmcv.sh)')
    report = analyze_config(str(repo_root / 'configs/cityscapes/snl_r50-d8_4xb2-40k_cityscapes-512x1024.py'),
                            (64, 128))
    assert report.input_shape == (1, 3, 64, 128)
    (block, ) = report.blocks
    assert block.type == 'SNLBlock' and 'decode_head' in block.name
    assert report.added()[0] > 0


def test_tool_takes_key_value_cfg_options(tmp_path, repo_root, subprocess_env):
    """--cfg-options key=value (mmengine's DictAction) as tools/train.py: a quarter of the channels in the block."""
    out = tmp_path / 'flops.json'
    config = user_config(tmp_path, TSM, True, 'tsm_snl')
    result = subprocess.run([sys.executable, 'tools/analysis/get_flops.py', config, '--shape', '64', '--json',
                             str(out), '--cfg-options', 'model.backbone.plugins.0.cfg.reduction=4'],
                            cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data['input_shape'] == [1, 8, 3, 64, 64]
    # theta, phi, g (1024 -> 256) and w1, w2 (256 -> 1024)
    assert data['blocks_conv_weights'] == 5 * 1024 * 256
    assert 'SNLBlock at model.backbone.layer3.1.snl_block' in result.stdout


def test_cfg_options_reach_the_model(tmp_path):
    report = analyze_config(user_config(tmp_path, TSM, True, 'tsm_snl'), (64, 64),
                            {'model.backbone.plugins.0.cfg.reduction': 8})
    assert report.added(paper_counting=True)[1] == 5 * 1024 * 128
