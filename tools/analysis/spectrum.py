"""Spectral diagnostics of the nonlocal blocks of a model (the paper's Sec. 2.1): for each block, on real
inputs, the eigenvalues of its affinity, whether it is symmetric, the range of its spectrum against [-1, 1], and
the frequency response of its Chebyshev filter. Writes a PNG (with PDF and SVG) and a JSON.

Builds the config's model (loading CHECKPOINT when given; a freshly built block is the identity, its output norm
zero, so its response after the norm is 0), runs a few samples of the test set through it and catches each
block's input. See docs/analysis.md for what is plotted.

Examples::

    python tools/analysis/spectrum.py configs/demo/preresnet20-snl_relation.py work_dirs/demo/snl/epoch_6.pth
    python tools/analysis/spectrum.py configs/demo/preresnet20-snl_relation.py NL_CKPT --out work_dirs/spectrum/nl \\
        --cfg-options model.backbone.plugins.0.cfg.type=NLBlock
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import snl_mm.compat  # noqa: F401,E402,I001  (registration, and the fixes of mmengine's gaps, before anything is built)
from mmengine.config import DictAction  # noqa: E402

from snl_mm.analysis.inputs import build_model, catch_block_inputs, load_config, test_batch  # noqa: E402
from snl_mm.analysis.spectrum import block_report, plot_spectra, summary_line, to_json  # noqa: E402
from snl_mm.blocks import find_blocks  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (default: the freshly built model)')
    parser.add_argument('--out', default='work_dirs/spectrum', help='directory of spectrum.png/.pdf/.svg/.json')
    parser.add_argument('--blocks', nargs='+', help='module paths of the blocks (default: every block)')
    parser.add_argument('--num-samples', type=int, default=2, help='test samples whose affinities are analysed')
    parser.add_argument('--max-nodes', type=int, default=2048,
                        help='largest affinity analysed (dense eigenvalues cost O(N^3))')
    parser.add_argument('--device', default='cpu', help='device to run the model on')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs as in tools/train.py')
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error(f'--num-samples must be >= 1, got {args.num_samples}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    weights = f' with {args.checkpoint}' if args.checkpoint else ' (freshly built)'
    print(f'[1/4] building the model of {args.config}{weights}', flush=True)
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.checkpoint, args.device)
    blocks = find_blocks(model)
    if args.blocks:
        unknown = [b for b in args.blocks if b not in blocks]
        if unknown:
            raise KeyError(f'--blocks {unknown} are not blocks of the model; its blocks: {list(blocks)}')
        blocks = {name: blocks[name] for name in args.blocks}
    if not blocks:
        raise KeyError(f'the model of {args.config} holds no nonlocal block')
    print(f'[2/4] running {args.num_samples} test sample(s) through it', flush=True)
    _, _, batch = test_batch(cfg, model, args.num_samples)
    _, inputs = catch_block_inputs(model, batch, blocks)
    reports = []
    for i, (name, block) in enumerate(blocks.items(), 1):
        print(f'[3/4] block {i}/{len(blocks)}: {name}: eigenvalues of its affinity on {tuple(inputs[name].shape)}',
              flush=True)
        reports.append(block_report(name, block, inputs[name], args.num_samples, args.max_nodes))
        print('    ' + summary_line(reports[-1]).replace('\n', '\n    '), flush=True)
    os.makedirs(args.out, exist_ok=True)
    json_path = osp.join(args.out, 'spectrum.json')
    with open(json_path, 'w') as f:
        json.dump(dict(config=args.config, checkpoint=args.checkpoint, blocks=to_json(reports)), f, indent=1)
    weights = osp.basename(args.checkpoint) if args.checkpoint else 'freshly built'
    title = f'{osp.basename(args.config)}, {weights}'
    figures = plot_spectra(reports, osp.join(args.out, 'spectrum.png'), title)
    print(f'[4/4] written: {osp.abspath(json_path)}, ' + ', '.join(osp.abspath(p) for p in figures), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
