"""Peak memory and time of one training iteration of a segmentation model, per formulation of its SNL block.

Each variant runs in a fresh child process (one ``train_step``: data preprocessor, forward, loss, backward,
SGD step) and the parent reads that child's peak resident set size from ``os.wait4``, so the numbers do not
mix. Variants:

* ``fcn``: the FCN baseline config (no block), the floor of the comparison;
* ``factored`` / ``dense`` / ``auto``: the SNL config with ``path`` of the SNL block forced to that order of
  products (``auto`` lets the cost model choose).

It builds mmsegmentation's own model (compiled mmcv needed) and reads the CPU resident set. The whole-model
table of ``tools/analysis/benchmark_blocks.py --models seg`` measures every block head on CUDA (allocator peak)
or the CPU, with mmcv-lite too.

Example (the numbers of docs/segmentation.md)::

    python tools/analysis/seg_memory.py --variants fcn factored dense --size 512 1024
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIG_DIR = ROOT / 'configs' / 'cityscapes'
SNL_CONFIG = CONFIG_DIR / 'snl_r50-d8_4xb2-40k_cityscapes-512x1024.py'
FCN_CONFIG = CONFIG_DIR / 'fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
VARIANTS = ('fcn', 'factored', 'dense', 'auto')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=str(SNL_CONFIG),
                        help='config with an SNLBlock in its decode head')
    parser.add_argument('--baseline-config', default=str(FCN_CONFIG), help='config of the "fcn" variant')
    parser.add_argument('--variants', nargs='+', default=['fcn', 'factored', 'dense'], choices=VARIANTS)
    parser.add_argument('--size', nargs=2, type=int, default=(512, 1024), metavar=('H', 'W'),
                        help='input (and crop) size')
    parser.add_argument('--batch', type=int, default=1, help='images per iteration')
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--child', choices=VARIANTS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_child(args: argparse.Namespace) -> dict:
    """One training iteration of the variant ``args.child``; returns its timings."""
    import torch
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import snl_mm  # noqa: F401 (registers the blocks and the head)

    cfg = Config.fromfile(args.baseline_config if args.child == 'fcn' else args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.pretrained = None  # no network
    cfg.model.data_preprocessor.size = tuple(args.size)
    if args.child != 'fcn':
        block = cfg.model.decode_head.block
        if block.type != 'SNLBlock':
            raise ValueError(f'--config must have decode_head.block.type="SNLBlock", got {block.type!r}')
        block.path = args.child
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))  # SyncBN needs a process group
    model.init_weights()
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4))

    h, w = args.size
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(args.batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        label = torch.randint(0, 19, (1, h, w), generator=g)
        samples.append(SegDataSample(gt_sem_seg=PixelData(data=label),
                                     metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))))
    start = time.perf_counter()
    log = model.train_step(dict(inputs=inputs, data_samples=samples), optim)
    seconds = time.perf_counter() - start
    return dict(variant=args.child, seconds=round(seconds, 2), loss=float(log['loss']),
                torch_threads=torch.get_num_threads())


def measure(args: argparse.Namespace, variant: str) -> dict:
    """Run ``variant`` in a child process; its result plus the child's peak RSS (MiB)."""
    cmd = [sys.executable, __file__, '--child', variant, '--config', args.config,
           '--baseline-config', args.baseline_config, '--size', *map(str, args.size),
           '--batch', str(args.batch)]
    # files, not pipes: the child must be reaped by os.wait4 (for its own rusage), never by communicate()
    with tempfile.TemporaryFile('w+') as out_f, tempfile.TemporaryFile('w+') as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0), err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise RuntimeError(f'variant {variant} failed ({proc.returncode}):\n{err[-4000:]}')
    result = json.loads(out.strip().splitlines()[-1])
    result['peak_rss_mib'] = round(usage.ru_maxrss / 1024, 1)  # ru_maxrss is in KiB on Linux
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return
    results = []
    print(f'one training iteration, input {args.batch}x3x{args.size[0]}x{args.size[1]}, CPU')
    print(f'{"variant":<10}{"peak RSS (MiB)":>16}{"time (s)":>10}{"loss":>10}')
    for variant in args.variants:
        r = measure(args, variant)
        results.append(r)
        print(f'{variant:<10}{r["peak_rss_mib"]:>16.1f}{r["seconds"]:>10.2f}{r["loss"]:>10.4f}', flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()
