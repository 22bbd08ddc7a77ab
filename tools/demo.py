"""Summary of the embedded demo (``tools/demo.sh``): accuracies with and without the block, and the paths.

Reads what the demo's runs left in ``WORK_DIR``: ``{snl,baseline}/test_metrics.json`` (written by
``tools/test.py --out-item metrics``), ``last_checkpoint``, the training log and ``snl/attention.png``.

    python tools/demo.py work_dirs/demo
"""
import argparse
import glob
import json
import os.path as osp
from typing import Dict, Optional

RUNS = (('snl', 'with one SNL block'), ('baseline', 'without a block'))


def train_log(run_dir: str) -> Optional[str]:
    """The newest training log of a run: ``{run_dir}/<timestamp>/<timestamp>.log``."""
    logs = sorted(glob.glob(osp.join(run_dir, '*', '*.log')))
    return logs[-1] if logs else None


def read_run(run_dir: str) -> Dict[str, Optional[str]]:
    """Top-1 accuracy, checkpoint and log of one demo run; raises FileNotFoundError naming what is missing."""
    metrics_file = osp.join(run_dir, 'test_metrics.json')
    pointer = osp.join(run_dir, 'last_checkpoint')
    for path in (metrics_file, pointer):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path} is missing: did tools/demo.sh finish this run?')
    with open(metrics_file) as f:
        metrics = json.load(f)
    if 'accuracy/top1' not in metrics:
        raise KeyError(f"{metrics_file} has no 'accuracy/top1'; keys: {sorted(metrics)}")
    with open(pointer) as f:
        checkpoint = f.read().strip()
    return dict(top1=metrics['accuracy/top1'], checkpoint=checkpoint, log=train_log(run_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description='Summary of the embedded demo')
    parser.add_argument('work_dir', help='the demo work directory (WORK_DIR of tools/demo.sh)')
    parser.add_argument('--seconds', type=int, help='wall time of the demo, to print')
    args = parser.parse_args()

    runs = {key: read_run(osp.join(args.work_dir, key)) for key, _ in RUNS}
    png = osp.join(args.work_dir, 'snl', 'attention.png')
    took = f' in {args.seconds} s' if args.seconds is not None else ''

    print()
    print(f'Demo finished{took}. First stage of PreResNet-20 on RelationDataset (two objects far apart: same '
          'colour or not), top-1 accuracy on the generated validation set:')
    for key, title in RUNS:
        print(f'  {title:<20} {runs[key]["top1"]:6.2f} %')
    gain = runs['snl']['top1'] - runs['baseline']['top1']
    print(f'  {"difference":<20} {gain:+6.2f} points')
    for key, title in RUNS:
        print(f'{title}:')
        print(f'  log:         {osp.abspath(runs[key]["log"]) if runs[key]["log"] else "(not found)"}')
        print(f'  checkpoint:  {osp.abspath(runs[key]["checkpoint"])}')
        if key == 'snl':
            print(f'  attention:   {osp.abspath(png) if osp.isfile(png) else "(not written)"}')


if __name__ == '__main__':
    main()
