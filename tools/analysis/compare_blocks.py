"""Train the baseline and each nonlocal block side by side on a task of the benchmark of long-range relations,
over several seeds, and write one table and the plots (accuracy against cost, learning curves).

Every run goes through mmengine's Runner with the task config (``configs/relation/*``, or any config that has a
``block_site``), the block inserted at that site; runs of one model share a fresh process, ``--jobs`` models train
at a time. Writes ``OUT/table.md``, ``OUT/results.json`` (every run, the machine, the wall time and the load),
``OUT/accuracy_vs_cost.{png,pdf,svg}``, ``OUT/learning_curves.{png,pdf,svg}``, and each run's work directory
(``OUT/{model}/seed{k}``: log, config, last checkpoint). See docs/analysis.md.

Examples::

    python tools/analysis/compare_blocks.py --task pair                      # baseline + six blocks, 3 seeds
    python tools/analysis/compare_blocks.py --task majority --blocks SNLBlock NLBlock --seeds 0 1 2 3 4
    python tools/analysis/compare_blocks.py --task pair --blocks SNLBlock \\
        --graph-block "gsnl3={'graph_filter': {'order': 3}}" "snl-rw={'affinity': {'normalize': 'random_walk'}}"
    python tools/analysis/compare_blocks.py --config my_task.py --cfg-options train_cfg.max_epochs=10
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from mmengine.config import DictAction  # noqa: E402

import snl_mm.compat  # noqa: E402,F401  (the fixes of mmengine's gaps; spawned runs import this module too)
from snl_mm.analysis.compare import TASKS, compare, make_variants, task_config  # noqa: E402
from snl_mm.analysis.compare_report import format_table, write_results  # noqa: E402
from snl_mm.blocks import BLOCK_NAMES  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--task', default='pair', choices=sorted(TASKS), help='a task of configs/relation')
    source.add_argument('--config', help='a config with a block_site, instead of --task')
    parser.add_argument('--blocks', nargs='*', default=list(BLOCK_NAMES),
                        help='registered block types to compare (default: the six blocks of the paper)')
    parser.add_argument('--graph-block', nargs='+', default=[], metavar='NAME=DICT',
                        help='GraphNonlocalBlock configs to compare too, as NAME={python dict of its arguments}')
    parser.add_argument('--no-baseline', action='store_true', help='leave out the network without a block')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='training seeds')
    parser.add_argument('--jobs', type=int, default=2, help='models trained at a time (one process each)')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads per process')
    parser.add_argument('--out', default=None, help='output directory (default: work_dirs/compare/TASK)')
    parser.add_argument('--no-plots', action='store_true', help='write the table and JSON only')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every run, key=value pairs as in tools/train.py')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    config = task_config(args.config or args.task)
    name = os.path.splitext(os.path.basename(args.config))[0] if args.config else args.task
    out = args.out or os.path.join('work_dirs', 'compare', name)
    variants = make_variants(args.blocks, args.graph_block, baseline=not args.no_baseline)
    print(f'comparing {", ".join(v.name for v in variants)} on {config}, seeds {args.seeds}, {args.jobs} at a time '
          f'({args.threads} thread(s) each), load average {os.getloadavg()[0]:.2f}; runs in {out}', flush=True)
    start = time.time()
    result = compare(config, variants, args.seeds, out, jobs=args.jobs, threads=args.threads,
                     cfg_options=args.cfg_options, progress=lambda line: print(line, flush=True))
    written = write_results(result, out, plots=not args.no_plots)
    load = result['load']
    print()
    print(format_table(result['rows']))
    print(f'\nwall time {(time.time() - start) / 60:.1f} min; 1-minute load average during the runs: mean '
          f'{load["mean"]:.2f}, max {load["max"]:.2f} ({os.cpu_count()} CPUs)')
    for kind, paths in written.items():
        print(f'{kind}: {", ".join(os.path.abspath(p) for p in paths)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
