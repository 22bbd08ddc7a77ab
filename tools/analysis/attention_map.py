"""Draw the attention maps of a trained nonlocal block for a few query positions (the paper's Fig. 3 B).

Builds the config's model, loads the checkpoint, runs a few samples of the test set through the config's
test pipeline and data preprocessor, catches the block's input and draws rows of ``block.affinity(x)`` as
heat maps over the input image. Query positions: ``--queries``, or the object centres for the package's
``RelationDataset``, or the image centre and two corners of a central square.

Examples::

    python tools/analysis/attention_map.py configs/demo/preresnet20-snl_relation.py CKPT --out attn.png
    python tools/analysis/attention_map.py CONFIG CKPT --block backbone.layer3.4.snl_block \
        --queries 100,60 40,180
"""
import argparse
import os.path as osp
from typing import List, Sequence

import snl_mm.compat  # noqa: F401,I001  (registration, and the fixes of mmengine's gaps, before anything is built)
import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import DATASETS, MODELS, init_default_scope
from mmengine.runner import load_checkpoint

from snl_mm.analysis.attention import (Point, attention_maps, plot_attention_maps, record_input,
                                       select_block, to_feature_index)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Attention maps of a trained nonlocal block, as a PNG')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', default='attention.png', help='PNG file to write')
    parser.add_argument('--block', help='module path of the block (default: the first block of the model)')
    parser.add_argument('--num-images', type=int, default=4, help='how many test images to draw')
    parser.add_argument(
        '--queries',
        nargs='+',
        metavar='ROW,COL',
        help='query positions in pixels of the network input, the same for every image')
    parser.add_argument('--device', default='cpu', help='device to run the model on')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format')
    args = parser.parse_args()
    if args.num_images < 1:
        raise ValueError(f'--num-images must be >= 1, got {args.num_images}')
    return args


def parse_point(text: str) -> Point:
    """``'row,col'`` -> ``(row, col)``."""
    try:
        row, col = (float(v) for v in text.split(','))
    except ValueError:
        raise ValueError(f'--queries: {text!r} is not ROW,COL') from None
    return row, col


def default_points(info: dict, height: int, width: int) -> List[Point]:
    """Object centres of a RelationDataset sample, else the centre and two corners of a central square."""
    if 'centers' in info:
        centers = [tuple(float(v) for v in c) for c in info['centers']]
        # a background point as far as possible from both objects, for contrast
        grid = [(r, c) for r in (height * 0.15, height * 0.5, height * 0.85)
                for c in (width * 0.15, width * 0.5, width * 0.85)]
        far = max(grid, key=lambda p: min(np.hypot(p[0] - r, p[1] - c) for r, c in centers))
        return centers + [far]
    return [(height / 2, width / 2), (height / 4, width / 4), (3 * height / 4, 3 * width / 4)]


def display_image(inputs: torch.Tensor, to_rgb: bool) -> np.ndarray:
    """The pipeline's ``(3, H, W)`` uint8 tensor as an RGB ``(H, W, 3)`` array."""
    image = inputs.permute(1, 2, 0).numpy()
    # images loaded from files are BGR and the preprocessor flips them; in-memory ones are already RGB
    return np.ascontiguousarray(image[..., ::-1]) if to_rgb else image


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))

    # the top-level data_preprocessor joins the model as the Runner does it
    if cfg.get('data_preprocessor') is not None:
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.to(args.device).eval()
    block_name, block = select_block(model, args.block)

    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    samples = [dataset[i] for i in range(min(args.num_images, len(dataset)))]
    batch = model.data_preprocessor(
        dict(inputs=[s['inputs'] for s in samples], data_samples=[s['data_samples'] for s in samples]),
        False)
    inputs = batch['inputs']
    if inputs.dim() != 4:
        raise ValueError(f'attention maps are drawn for image models; the inputs have shape '
                         f'{tuple(inputs.shape)}')
    height, width = inputs.shape[-2:]

    with torch.no_grad(), record_input(block) as caught:
        scores = model(inputs, batch['data_samples'], mode='predict')
    if not caught:
        raise RuntimeError(f'block {block_name} was not called in the forward pass')
    x = caught[0]

    points: List[List[Point]] = []
    for i in range(len(samples)):
        if args.queries:
            points.append([parse_point(q) for q in args.queries])
        else:
            points.append(default_points(dataset.get_data_info(i), height, width))
    num_queries = min(len(p) for p in points)
    points = [p[:num_queries] for p in points]
    queries: Sequence[Sequence[int]] = [[to_feature_index(p, (height, width), x.shape[-2:]) for p in ps]
                                       for ps in points]
    maps = attention_maps(block, x, queries)

    to_rgb = bool((cfg.model.get('data_preprocessor') or {}).get('to_rgb', False))
    classes = dataset.metainfo.get('classes')
    images, titles = [], []
    for sample, pred in zip(samples, scores):
        images.append(display_image(sample['inputs'], to_rgb))
        label, guess = int(sample['data_samples'].gt_label), int(pred.pred_label)
        name = (lambda k: classes[k]) if classes else str
        titles.append(f'label {name(label)} / pred {name(guess)}')
    out = plot_attention_maps(images, maps, points, args.out, titles, block_name)
    print(f'attention maps of {block_name} (input {tuple(x.shape)}) written to {osp.abspath(out)}')


if __name__ == '__main__':
    main()
