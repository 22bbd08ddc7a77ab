"""Every block (and a ResNet-50 with an SNL block inserted by ``plugins=``) under torch.compile, torch.fx,
torch.export and ONNX (both exporters, run in onnxruntime), and in bf16 / fp16 autocast: one table of graph
breaks and errors against eager float32.

The test suite checks the same with ``backend='aot_eager'`` (dynamo and AOTAutograd, seconds per block); this
tool compiles with inductor by default (code generation: minutes per block on a small CPU).

Examples::

    python tools/analysis/check_deploy.py                              # every block, every check, inductor
    python tools/analysis/check_deploy.py --blocks NLBlock CCBlock --checks compile --backend aot_eager
    python tools/analysis/check_deploy.py --checks onnx --resnet50 --json work_dirs/deploy.json
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

import torch  # noqa: E402

import snl_mm  # noqa: E402,F401 (registers the blocks)
from snl_mm.analysis.deploy import (autocast_check, compile_check, export_check, fx_check,  # noqa: E402
                                    onnx_check)
from snl_mm.blocks import registered_blocks  # noqa: E402
from snl_mm.registry import ROOT_MODELS  # noqa: E402

CHECKS = ('autocast', 'compile', 'fx', 'export', 'onnx')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--blocks', nargs='+', default=None, help='registered block names (default: all)')
    parser.add_argument('--shape', type=int, nargs='+', default=[2, 64, 14, 14], help='block input (B, C, *S)')
    parser.add_argument('--checks', nargs='+', default=list(CHECKS), choices=CHECKS)
    parser.add_argument('--backend', default='inductor', help='torch.compile backend (inductor, aot_eager...)')
    parser.add_argument('--resnet50', action='store_true',
                        help='also export mmpretrain ResNet-50 + SNL (plugins=) to ONNX, input (1, 3, 224, 224)')
    parser.add_argument('--json', default=None, help='also write the figures to this JSON file')
    args = parser.parse_args(argv)
    known = registered_blocks()
    for name in args.blocks or []:
        if name not in known:
            parser.error(f'--blocks: {name!r} is not a registered block; choose from {sorted(known)}')
    if len(args.shape) not in (3, 4, 5):
        parser.error(f'--shape: (B, C, L), (B, C, H, W) or (B, C, T, H, W), got {args.shape}')
    return args


def _block(name: str, channels: int) -> torch.nn.Module:
    """The block with PyTorch's default initialisation of its convolutions and random norms (not the
    identity of a fresh build)."""
    block = ROOT_MODELS.build(dict(type=name, in_channels=channels))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.modules.conv._ConvNd):
                m.reset_parameters()
            elif isinstance(m, torch.nn.modules.batchnorm._NormBase) or isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
        for name_, p in block.named_parameters():
            if name_.endswith('gamma.scale'):
                p.fill_(0.5)
    return block


def resnet50_with_snl() -> torch.nn.Module:
    from mmpretrain.registry import MODELS
    model = MODELS.build(dict(type='snl_mm.ResNet', depth=50, plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False), position='after_block', blocks=(-2, ))]))
    block = model.layer3[4].snl_block
    with torch.no_grad():
        block.norm.weight.fill_(1.0)  # not the identity of a fresh build
    return model.eval()


def run(args) -> dict:
    names = args.blocks or [n for n, cls in registered_blocks().items() if cls.__module__.startswith('snl_mm.')]
    x = torch.randn(*args.shape, generator=torch.Generator().manual_seed(1))
    results = {}
    for name in names:
        row = results.setdefault(name, {})
        block = _block(name, args.shape[1])
        if 'autocast' in args.checks:
            row['autocast'] = autocast_check(block, x)
        if 'compile' in args.checks:
            row['compile'] = compile_check(block, x, args.backend)
        if 'fx' in args.checks:
            row['fx'] = fx_check(block, x)
        if 'export' in args.checks:
            row['export'] = export_check(block, x)
        if 'onnx' in args.checks:
            row['onnx_dynamo'] = onnx_check(block, x, dynamo=True)
            row['onnx_torchscript'] = onnx_check(block, x, dynamo=False)
        print(f'{name}: {json.dumps(row)}', file=sys.stderr, flush=True)
    if args.resnet50:
        model, image = resnet50_with_snl(), torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
        results['ResNet-50 + SNL'] = dict(onnx_dynamo=onnx_check(model, image, dynamo=True),
                                          onnx_torchscript=onnx_check(model, image, dynamo=False))
    return results


def format_table(results: dict) -> str:
    columns = [('autocast', 'bf16_err', 'bf16 err', '{:.1e}'), ('autocast', 'fp16_err', 'fp16 err', '{:.1e}'),
               ('compile', 'graph_breaks', 'breaks', '{}'), ('compile', 'err_output', 'compile err', '{:.1e}'),
               ('compile', 'err_param_grads', 'grad err', '{:.1e}'), ('compile', 'compile_s', 'compile s', '{:.0f}'),
               ('fx', 'err', 'fx err', '{:.1e}'), ('export', 'err', 'export err', '{:.1e}'),
               ('onnx_dynamo', 'max_abs_err', 'onnx dynamo', '{:.1e}'),
               ('onnx_torchscript', 'max_abs_err', 'onnx ts', '{:.1e}')]
    present = [c for c in columns if any(c[1] in row.get(c[0], {}) for row in results.values())]
    width = max(len(name) for name in results) + 2
    lines = [f'{"case":{width}s}' + ''.join(f'{c[2]:>13s}' for c in present)]
    for name, row in results.items():
        cells = [c[3].format(row[c[0]][c[1]]) if c[1] in row.get(c[0], {}) else '-' for c in present]
        lines.append(f'{name:{width}s}' + ''.join(f'{cell:>13s}' for cell in cells))
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(args.shape)}, '
          f'backend {args.backend}', flush=True)
    results = run(args)
    print(format_table(results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(shape=args.shape, backend=args.backend, results=results), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
