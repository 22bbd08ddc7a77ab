"""Benchmark nonlocal blocks against their dense formulation and mmcv's implementations.

Times forward + backward and measures extra peak memory for each block and shape, each case in a fresh
process, prints a table of ratios and writes ``results.json``, ``results.csv`` and ``benchmark.png`` to
``--out-dir``. Examples::

    python tools/analysis/benchmark_blocks.py --blocks SNLBlock --shapes 8,1024,14,14 1,512,64,128
    python tools/analysis/benchmark_blocks.py --blocks NLBlock --shapes 2,512,64,64 --impls block mmcv
    python tools/analysis/benchmark_blocks.py --blocks SNLBlock NLBlock --shapes 1,512,256,256 \\
        --impls block --no-time                       # memory only (N = 64k)
    python tools/analysis/benchmark_blocks.py --model-step 4,3,224,224 --blocks SNLBlock
    python tools/analysis/benchmark_blocks.py --compare-paths --blocks SNLBlock --shapes 1,1024,14,14 1,1024,32,32
    python tools/analysis/benchmark_blocks.py --models seg i3d --device cuda --dtype bf16   # whole models
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from snl_mm.analysis.benchmark import (DEVICES, DTYPES, IMPLEMENTATIONS, REFERENCE_LIMIT_BYTES, Case,  # noqa: E402
                                       format_model_table, format_scaling, format_table, machine_info,
                                       parse_shape, run_benchmark, run_model_step, run_models, run_paths,
                                       write_results)


def parse_ints(text: str):
    """``'3,64,128'`` -> ``(3, 64, 128)``."""
    try:
        return tuple(int(s) for s in text.replace('x', ',').split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated integers, got {text!r}') from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--blocks', nargs='+', default=['SNLBlock'],
                        help='registered block types (SNLBlock NLBlock NSBlock A2Block CGNLBlock CCBlock), or '
                        '"all": the six blocks of the catalogue')
    parser.add_argument('--shapes', nargs='+', type=parse_shape, default=[parse_shape('8,1024,14,14')],
                        help='input shapes B,C,*S (e.g. 8,1024,14,14 1,512,8,28,28)')
    parser.add_argument('--cfg', type=json.loads, default={},
                        help='extra block arguments as JSON, e.g. \'{"path": "factored"}\'')
    parser.add_argument('--impls', nargs='+', default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS,
                        help='implementations to compare (the block is always measured)')
    parser.add_argument('--device', default='cpu', choices=DEVICES)
    parser.add_argument('--dtype', default='fp32', choices=tuple(DTYPES),
                        help='fp16/bf16 run under torch.autocast')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed runs per implementation (with --models: timed training steps)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs first (at least 1)')
    parser.add_argument('--no-time', action='store_true', help='measure memory only')
    parser.add_argument('--no-memory', action='store_true', help='measure time only')
    parser.add_argument('--no-products', action='store_true', help='skip the matrix-product floor')
    parser.add_argument('--in-process', action='store_true',
                        help='run the cases in this process (faster start; memory figures less clean)')
    parser.add_argument('--model-step', type=parse_shape, default=None, metavar='B,3,H,W',
                        help='instead of single blocks: one training step of ResNet-50 with the first of '
                        '--blocks before the last block of res4, against the plain ResNet-50')
    parser.add_argument('--compare-paths', action='store_true',
                        help='instead: time the first of --blocks (SNLBlock...) with path=dense and '
                        'path=factored at each shape, where the cost model switches')
    parser.add_argument('--models', nargs='+', default=None, metavar='FAMILY[/VARIANT]',
                        help='instead: whole models of the configs, training memory and inference fps: seg '
                        '(Cityscapes FCN and each block head, 512x1024), i3d (I3D R-50 and each block, '
                        '32x224x224), or one variant such as seg/snl, i3d/i3d')
    parser.add_argument('--model-batch', type=int, default=None,
                        help='with --models: batch per step instead of the config\'s per-device batch')
    parser.add_argument('--model-shape', type=parse_ints, default=None, metavar='3,H,W|3,T,H,W',
                        help='with --models: one input instead of the config\'s crop / clip')
    parser.add_argument('--out-dir', default='work_dirs/benchmark', help='where results go')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--reference-limit-gib', type=float, default=REFERENCE_LIMIT_BYTES / 2**30,
                        help='skip references whose N x N maps would need more memory (GiB; estimated as four '
                        '(B, N, N) float32 maps)')
    args = parser.parse_args(argv)
    if args.blocks == ['all']:
        from snl_mm.blocks import BLOCK_NAMES
        args.blocks = list(BLOCK_NAMES)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    if args.model_step is not None:
        plugins = [dict(cfg=dict(type=args.blocks[0], **args.cfg), stages=(False, False, True, False),
                        position='after_block', blocks=(-2, ))]
        result = run_model_step(args.model_step, plugins, device=args.device, repeats=args.repeats,
                                warmup=args.warmup, isolate=not args.in_process, seed=args.seed)
        print(f"ResNet-50 training step {tuple(result['shape'])} on {args.device}: plain "
              f"{result['plain_ms']:.1f} ms, + {args.blocks[0]} {result['blocks_ms']:.1f} ms: "
              f"{result['ratio']:.3f}x (median of {result['repeats']}); parameters "
              f"{result['plain_params'] / 1e6:.2f}M -> {result['blocks_params'] / 1e6:.2f}M")
        path = os.path.join(args.out_dir, 'model_step.json')
        with open(path, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'written: {path}')
        return 0
    if args.models:
        return run_model_table(args)
    if args.compare_paths:
        results = run_paths(args.blocks[0], args.shapes, args.cfg, device=args.device, repeats=args.repeats,
                            isolate=not args.in_process)
        for r in results:
            print(f"{r['block']} {tuple(r['shape'])} N={r['positions']}: dense {r['dense_ms']:.1f} ms, factored "
                  f"{r['factored_ms']:.1f} ms, dense/factored {r['dense_over_factored']:.2f}; the cost model "
                  f"takes {r['model']}")
        path = os.path.join(args.out_dir, 'paths.json')
        with open(path, 'w') as f:
            json.dump(results, f, indent=1)
        print(f'written: {path}')
        return 0
    cases = [Case(block, shape, dict(args.cfg)) for block in args.blocks for shape in args.shapes]
    rows = run_benchmark(cases, impls=args.impls, device=args.device, dtype=args.dtype,
                         repeats=args.repeats, warmup=args.warmup, memory=not args.no_memory,
                         timing=not args.no_time, products=not args.no_products,
                         isolate=not args.in_process, seed=args.seed,
                         reference_limit_bytes=int(args.reference_limit_gib * 2**30))
    print(f'\n{args.device}, {args.dtype}' + (' (autocast)' if args.dtype != 'fp32' else ''))
    print(format_table(rows))
    scaling = format_scaling(rows)
    if scaling:
        print()
        print(scaling)
    paths = write_results(rows, args.out_dir)
    print('written: ' + ', '.join(paths.values()))
    return 0


def run_model_table(args: argparse.Namespace) -> int:
    """``--models``: the whole-model table, printed and written to ``models.json`` / ``models.md``."""
    rows = run_models(args.models, device=args.device, dtype=args.dtype, steps=args.repeats,
                      warmup=args.warmup, batch=args.model_batch, shape=args.model_shape, seed=args.seed)
    table = format_model_table(rows)
    print()
    print(table)
    paths = [os.path.join(args.out_dir, name) for name in ('models.json', 'models.md')]
    with open(paths[0], 'w') as f:
        json.dump(dict(machine=machine_info(), rows=rows), f, indent=1)
    with open(paths[1], 'w') as f:
        f.write(table + '\n')
    print('written: ' + ', '.join(paths))
    return 0 if all(r['status'] == 'ok' for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
