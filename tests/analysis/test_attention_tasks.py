"""attention_map.py for every task: a video strip for a 3D block (written at its expected size), per-pixel queries on
a segmentation input, and the image classifier of the demo; run in-process through the tool's main()."""
import importlib.util
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch

from snl_mm.analysis.attention import VIDEO_DPI, attention_maps, plot_video_attention, video_strip_size

REPO = Path(__file__).resolve().parents[2]


def attention_tool():
    spec = importlib.util.spec_from_file_location('attention_map_tool', REPO / 'tools/analysis/attention_map.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny(loader_keys, **values):
    return [f'{loader}.dataset.{key}={value}' for loader in loader_keys for key, value in values.items()]


def test_video_strip_of_a_3d_block(tmp_path):
    """The tiny I3D of the video task with an SNL block after its first residual block: one row per (clip, query),
    one panel per time step, a PNG of exactly video_strip_size x VIDEO_DPI pixels."""
    config = tmp_path / 'video_snl.py'
    config.write_text(f"_base_ = '{REPO / 'configs/relation/i3d-tiny_video-relation.py'}'\n"
                      "model = dict(backbone=dict(plugins=[dict(cfg=dict(type='SNLBlock'), stages=(True, ), "
                      "position='after_block', blocks=(0, ))]))\n")
    out = tmp_path / 'strip.png'
    options = tiny(['test_dataloader'], num_samples=2)
    assert attention_tool().main([str(config), '--out', str(out), '--num-images', '1', '--cfg-options', *options]) == 0
    # the generated clip gives 2 objects + 1 background query: 3 rows, 8 time steps (the stage keeps the frames)
    width, height = video_strip_size(3, 8)
    png = mpimg.imread(str(out))
    assert png.shape[:2] == (round(height * VIDEO_DPI), round(width * VIDEO_DPI))
    assert out.with_suffix('.pdf').stat().st_size > 1000 and out.with_suffix('.svg').exists()


def test_video_maps_are_rows_of_the_3d_affinity(monkeypatch, tmp_path):
    from snl_mm.registry import ROOT_MODELS
    torch.manual_seed(0)
    block = ROOT_MODELS.build(dict(type='NLBlock', in_channels=8)).eval()
    x = torch.randn(2, 8, 4, 5, 6)
    maps = attention_maps(block, x, [[0, 37], [119, 60]])
    assert maps.shape == (2, 2, 4, 5, 6)
    affinity = block.affinity(x)
    torch.testing.assert_close(maps[1, 0].flatten(), affinity[1, 119])
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, 'close', lambda fig=None: figures.append(fig))
    clips = [torch.randint(0, 255, (8, 20, 24, 3), dtype=torch.uint8).numpy() for _ in range(2)]
    plot_video_attention(clips, maps, [[(0, 1, 2), (7, 19, 23)], [(3, 10, 10), (5, 0, 0)]], str(tmp_path / 'v.png'),
                         ['a', 'b'], 'nl')
    (fig, ) = figures
    bars = [ax for ax in fig.axes if ax.get_label() == '<colorbar>']
    assert len(bars) == 4 and all(b.get_ylabel() == 'attention' for b in bars)
    titles = [ax.get_title().replace('\n', ' ') for ax in fig.axes if ax.get_label() != '<colorbar>']
    assert titles[0] == 'a: query 1, frame 0 (1, 2)' and titles[1:5] == [
        't = 0 (frame 1)', 't = 1 (frame 3)', 't = 2 (frame 5)', 't = 3 (frame 7)']


def test_segmentation_queries_per_pixel(tmp_path):
    from snl_mm.utils import mmseg_available
    if not mmseg_available():
        pytest.skip('mmsegmentation needs a compiled mmcv (tools/build_mmcv.sh)')
    import numpy as np

    from tests.seg.conftest import _write_pair
    rng = np.random.default_rng(0)
    for index in range(2):
        _write_pair(tmp_path / 'data', 'val', index, rng)
    out = tmp_path / 'seg.png'
    options = [f'test_dataloader.dataset.data_root={tmp_path / "data"}',
               'test_dataloader.dataset.pipeline.1.scale=(256,128)']
    tool = attention_tool()
    assert tool.main(['configs/cityscapes/snl_r50-d8_4xb2-40k_cityscapes-512x1024.py', '--out', str(out),
                      '--num-images', '2', '--queries', '64,128', '10,250', '--cfg-options', *options]) == 0
    png = mpimg.imread(str(out))
    assert png.shape[0] > 200 and png.shape[1] > 400
    # the file name of the sample is its title (a segmentation sample has no label to show)
    assert tool.describe({'data_samples': _seg_sample('a/b/city_000000_000019_leftImg8bit.png')}, object(), None,
                         0) == 'city_000000_000019_leftImg8bit.png'


def _seg_sample(path):
    from mmengine.structures import BaseDataElement
    return BaseDataElement(metainfo=dict(img_path=path))


def test_video_strip_of_the_ucf101_config(tmp_path, capsys):
    """The UCF-101 I3D + SNL config on two tiny mp4 clips (decoded by its own DecordInit pipeline), the clip and the
    crops shrunk: a strip per query, of the size its rows and time steps give."""
    pytest.importorskip('decord')
    import re

    import numpy as np

    from tests.configs.conftest import write_videos
    write_videos(tmp_path, np.random.default_rng(0))
    prefix = 'test_dataloader.dataset'
    options = [f'{prefix}.ann_file={tmp_path / "val.txt"}', f'{prefix}.data_prefix.video={tmp_path / "videos"}',
               f'{prefix}.pipeline.1.clip_len=8', f'{prefix}.pipeline.1.frame_interval=1',
               f'{prefix}.pipeline.1.num_clips=1', f'{prefix}.pipeline.3.scale=(-1,40)',
               f'{prefix}.pipeline.4.crop_size=40']
    out = tmp_path / 'ucf.png'
    config = 'configs/ucf101/i3d_r50-snl_k400-pretrained_8xb8-32x2x1-100e_ucf101-split1-rgb.py'
    assert attention_tool().main([config, '--out', str(out), '--num-images', '2', '--cfg-options', *options]) == 0
    # three crops per clip (ThreeCrop): the block saw 6 maps, the strip draws the first crop of each clip
    shape = re.search(r'\(input \((\d+), (\d+), (\d+), (\d+), (\d+)\)\)', capsys.readouterr().out)
    assert shape and int(shape.group(1)) == 2
    width, height = video_strip_size(2 * 3, int(shape.group(3)))  # 2 clips x 3 default queries, T' steps
    assert mpimg.imread(str(out)).shape[:2] == (round(height * VIDEO_DPI), round(width * VIDEO_DPI))


def test_video_strip_of_a_2d_recogniser(tmp_path, capsys):
    """TSM (a 2D backbone, time folded into the batch): its block sees the clip (N, C, T, h, w), and the strip has one
    panel per segment."""
    config = tmp_path / 'tsm_snl.py'
    config.write_text(
        "_base_ = 'mmaction::recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py'\n"
        "custom_imports = dict(imports=['snl_mm'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(pretrained=None, plugins=[dict(cfg=dict(type='SNLBlock'), "
        "stages=(False, False, True, False), position='after_block', blocks=(1, ))]))\n"
        "test_dataloader = dict(dataset=dict(_delete_=True, type='snl_mm.VideoRelationDataset', split='test', "
        "num_samples=2, clip_len=8, img_size=64, object_size=12, min_distance=24, pipeline=["
        "dict(type='FormatShape', input_format='NCHW'), dict(type='PackActionInputs')]))\n")
    out = tmp_path / 'tsm.png'
    assert attention_tool().main([str(config), '--out', str(out), '--num-images', '1']) == 0
    assert '(input (1, 1024, 8, 4, 4))' in capsys.readouterr().out  # res4 of 64 x 64 frames, the 8 segments
    width, height = video_strip_size(3, 8)  # two objects and a background point, 8 time steps
    assert mpimg.imread(str(out)).shape[:2] == (round(height * VIDEO_DPI), round(width * VIDEO_DPI))
