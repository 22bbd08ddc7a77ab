"""Parameters and FLOPs of a config's model, and what its nonlocal blocks add: image classifiers, video recognisers
(2D: TSN, TSM...; 3D: I3D, SlowFast...) and segmentors.

Counts multiply-accumulates with mmengine's ``FlopAnalyzer`` (with handles for the blocks' matrix products:
``bmm``, broadcast ``matmul``, ``baddbmm``, ``scaled_dot_product_attention``, ``einsum``), prints the full count
by operator, each block's share, and the blocks' cost in the paper's Table 6 counting (1x1 convolutions).
The input is one sample of the model's kind: an image ``(1, 3, H, W)``; one clip of a 2D recogniser
``(1, T, 3, H, W)`` (``T``: the backbone's ``num_segments`` or the test pipeline's segments); one clip of a 3D
recogniser ``(1, 1, 3, T, H, W)`` (``T``: the test pipeline's ``clip_len``); one image of a segmentor (default:
the config's ``crop_size``).

Examples::

    python tools/analysis/get_flops.py configs/imagenet/resnet50-snl_8xb32-110e_in1k.py
    python tools/analysis/get_flops.py configs/imagenet/resnet50-nl_8xb32-110e_in1k.py --shape 224 224
    python tools/analysis/get_flops.py configs/ucf101/i3d_r50-snl_k400-pretrained_8xb8-32x2x1-100e_ucf101-split1-rgb.py
    python tools/analysis/get_flops.py CONFIG --shape 8 224 224      # a video recogniser, 8 frames
    python tools/analysis/get_flops.py CONFIG --cfg-options model.backbone.plugins.0.cfg.reduction=4
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

import snl_mm.compat  # noqa: F401,E402,I001  (registration, and the fixes of mmengine's gaps, before anything is built)
from mmengine.config import DictAction  # noqa: E402

from snl_mm.analysis.flops import analyze_config, format_report  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input size: H W, or T H W for video recognisers; a single value means H = W '
                        '(default: 224 x 224, a segmentor\'s crop_size, the clip length of the config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs as in tools/train.py')
    parser.add_argument('--json', default=None, help='also write the figures to this JSON file')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shape = None if args.shape is None else (args.shape * 2 if len(args.shape) == 1 else args.shape)
    print(f'building the model of {args.config} and tracing one forward pass...', file=sys.stderr, flush=True)
    report = analyze_config(args.config, shape, args.cfg_options)
    print(format_report(report, title=f'{args.config}'))
    if args.json:
        flops, params = report.added()
        conv_flops, conv_weights = report.added(paper_counting=True)
        with open(args.json, 'w') as f:
            json.dump(dict(config=args.config, input_shape=list(report.input_shape), flops=report.flops,
                           params=report.params, by_operator=report.by_operator, blocks_flops=flops,
                           blocks_params=params, blocks_conv_flops=conv_flops,
                           blocks_conv_weights=conv_weights,
                           blocks=[b.__dict__ for b in report.blocks]), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
