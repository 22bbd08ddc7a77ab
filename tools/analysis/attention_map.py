"""Draw the attention of a trained nonlocal block for a few query positions (the paper's Fig. 3 B), for every task:
image classification, semantic segmentation (per-pixel queries on the input image) and video recognition (a strip
of frames per query, for 3D blocks and for 2D backbones whose blocks see the clip).

Builds the config's model, loads the checkpoint, runs a few samples of the test set through the config's test
pipeline and data preprocessor, catches the block's input and draws rows of ``block.affinity(x)`` over the
input. Query positions: ``--queries``, else the objects of the package's generated datasets, else the centre and
two other points. Points are ``(row, col)`` (``(frame, row, col)`` for clips) in pixels of the network input.
Writes the PNG given by ``--out`` and a PDF and an SVG beside it.

Examples::

    python tools/analysis/attention_map.py configs/demo/preresnet20-snl_relation.py CKPT --out attn.png
    python tools/analysis/attention_map.py configs/cityscapes/snl_r50-d8_4xb2-40k_cityscapes-512x1024.py CKPT \\
        --queries 256,512 100,200 --num-images 2
    python tools/analysis/attention_map.py configs/relation/i3d-tiny_video-relation.py CKPT --out video.png
    python tools/analysis/attention_map.py CONFIG CKPT --block backbone.layer3.4.snl_block --queries 100,60
"""
import argparse
import os.path as osp
import sys
from typing import List, Sequence, Tuple

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import snl_mm.compat  # noqa: F401,E402,I001  (registration, and the fixes of mmengine's gaps, before anything is built)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from snl_mm.analysis.attention import (attention_maps, plot_attention_maps, plot_video_attention,  # noqa: E402
                                       select_block, to_feature_index)
from snl_mm.analysis.inputs import build_model, catch_block_inputs, load_config, test_batch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Attention maps of a trained nonlocal block (PNG, PDF, SVG)')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (default: the freshly built model)')
    parser.add_argument('--out', default='attention.png', help='PNG file to write (PDF and SVG beside it)')
    parser.add_argument('--block', help='module path of the block (default: the first block of the model)')
    parser.add_argument('--num-images', type=int, default=4, help='how many test samples to draw')
    parser.add_argument('--queries', nargs='+', metavar='[FRAME,]ROW,COL',
                        help='query positions in pixels of the network input, the same for every sample')
    parser.add_argument('--device', default='cpu', help='device to run the model on')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs as in tools/train.py')
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f'--num-images must be >= 1, got {args.num_images}')
    return args


def parse_point(text: str, rank: int) -> Tuple[float, ...]:
    """``'row,col'`` (or ``'frame,row,col'`` for clips) -> a tuple of floats."""
    try:
        point = tuple(float(v) for v in text.split(','))
    except ValueError:
        point = ()
    if len(point) != rank:
        raise ValueError(f'--queries: {text!r} is not {"FRAME,ROW,COL" if rank == 3 else "ROW,COL"}')
    return point


def default_points(info: dict, shape: Sequence[int]) -> List[Tuple[float, ...]]:
    """The objects of a generated sample (``centers``) and a background point far from them; else the centre and
    two points on the diagonal (in the middle frame for clips)."""
    *time, height, width = shape
    lead = (time[0] // 2, ) if time else ()
    if 'centers' in info:
        centers = [tuple(float(v) for v in c) for c in info['centers']]
        grid = [lead + (r, c) for r in (height * 0.15, height * 0.5, height * 0.85)
                for c in (width * 0.15, width * 0.5, width * 0.85)]
        far = max(grid, key=lambda p: min(np.hypot(p[-2] - c[-2], p[-1] - c[-1]) for c in centers))
        return centers + [far]
    return [lead + (height / 2, width / 2), lead + (height / 4, width / 4), lead + (3 * height / 4, 3 * width / 4)]


def to_rgb(cfg) -> bool:
    """Whether the data preprocessor flips BGR pipelines' images to RGB (then they are shown flipped too)."""
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    return bool(pre.get('to_rgb', False) or pre.get('bgr_to_rgb', False))


def as_image(chw: torch.Tensor, flip: bool, size: Sequence[int]) -> np.ndarray:
    """A ``(3, h, w)`` pipeline image as RGB ``(H, W, 3)``, zero-padded at the bottom and right to the network
    input ``size`` (as the data preprocessors pad batches)."""
    image = chw.permute(1, 2, 0).numpy()
    if flip:
        image = image[..., ::-1]
    out = np.zeros((*size, 3), dtype=image.dtype)
    out[:image.shape[0], :image.shape[1]] = image[:size[0], :size[1]]
    return out


def as_clip(inputs: torch.Tensor, flip: bool, views: int) -> np.ndarray:
    """The first of ``views`` packed clips (``(views, 3, T, H, W)`` for 3D recognisers, ``(views * T, 3, H, W)`` for
    2D ones) as ``(T, H, W, 3)`` frames."""
    if inputs.dim() == 5:
        frames = inputs[0].permute(1, 2, 3, 0)
    else:
        frames = inputs[:inputs.shape[0] // views].permute(0, 2, 3, 1)
    frames = frames.numpy()
    return np.ascontiguousarray(frames[..., ::-1]) if flip else frames


def describe(sample: dict, prediction, classes, index: int) -> str:
    """``label X / pred Y`` for classifiers and recognisers, the file name for segmentation."""
    data = sample['data_samples']
    if 'gt_label' in data and 'pred_label' in prediction:
        # the model may know more classes than the dataset names (a Kinetics head on other data): the index then
        def name(k: int) -> str:
            return str(classes[k]) if classes and k < len(classes) else str(k)
        return f'label {name(int(data.gt_label))} / pred {name(int(prediction.pred_label))}'
    path = data.metainfo.get('img_path') or data.metainfo.get('filename')
    return osp.basename(path) if path else f'sample {index}'


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.checkpoint, args.device)
    block_name, block = select_block(model, args.block)
    dataset, samples, batch = test_batch(cfg, model, args.num_images)
    predictions, caught = catch_block_inputs(model, batch, {block_name: block})
    x, inputs = caught[block_name], batch['inputs']
    flip, classes = to_rgb(cfg), dataset.metainfo.get('classes')
    titles = [describe(s, p, classes, i) for i, (s, p) in enumerate(zip(samples, predictions))]
    if x.dim() == 5:  # a clip: (B * views, C, T, h, w) (several clips or crops per sample); the first view of each
        per_sample = x.shape[0] // len(samples)
        x = x.reshape(len(samples), per_sample, *x.shape[1:])[:, 0]
        views = [as_clip(s['inputs'], flip, per_sample) for s in samples]
    elif x.dim() == 4:
        views = [as_image(s['inputs'], flip, inputs.shape[-2:]) for s in samples]
    else:
        raise ValueError(f'attention maps are drawn for 2D maps and clips; {block_name} sees {tuple(x.shape)}')
    shape = views[0].shape[:-1]  # (H, W) or (T, H, W) of the network input
    points = [[parse_point(q, len(shape)) for q in args.queries] if args.queries else
              default_points(dataset.get_data_info(i), shape) for i in range(len(samples))]
    num_queries = min(len(p) for p in points)
    points = [p[:num_queries] for p in points]
    queries = [[to_feature_index(p, shape, x.shape[2:]) for p in ps] for ps in points]
    maps = attention_maps(block, x, queries)
    if x.dim() == 5:
        written = plot_video_attention(views, maps, points, args.out, titles, block_name)
    else:
        written = plot_attention_maps(views, maps, points, args.out, titles, block_name)
    print(f'attention maps of {block_name} (input {tuple(x.shape)}) written to '
          + ', '.join(osp.abspath(p) for p in written))
    return 0


if __name__ == '__main__':
    sys.exit(main())
