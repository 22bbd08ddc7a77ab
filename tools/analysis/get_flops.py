"""Parameters and FLOPs of a config's model, and what its nonlocal blocks add.

Counts multiply-accumulates with mmengine's ``FlopAnalyzer`` (with handles for the blocks' matrix products:
``bmm``, broadcast ``matmul``, ``baddbmm``, ``scaled_dot_product_attention``, ``einsum``), prints the full count
by operator, each block's share, and the blocks' cost in the paper's Table 6 counting (1x1 convolutions).
Examples::

    python tools/analysis/get_flops.py configs/imagenet/resnet50-snl_8xb32-110e_in1k.py
    python tools/analysis/get_flops.py configs/imagenet/resnet50-nl_8xb32-110e_in1k.py --shape 224 224
    python tools/analysis/get_flops.py CONFIG --shape 8 224 224      # a video recogniser, one clip
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from snl_mm.analysis.flops import analyze_config, format_report  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224],
                        help='input size: H W (images) or T H W (video); a single value means H = W')
    parser.add_argument('--cfg-options', type=json.loads, default=None,
                        help='overrides of the config as JSON, e.g. \'{"model.backbone.depth": 101}\'')
    parser.add_argument('--json', default=None, help='also write the figures to this JSON file')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shape = args.shape * 2 if len(args.shape) == 1 else args.shape
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
