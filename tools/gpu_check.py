#!/usr/bin/env python3
"""Every GPU measurement and test of the package in one run, within a time budget.

For a machine with an NVIDIA GPU, its own Python and torch, and none of the OpenMMLab packages (the device
machines this project is lent: Python 3.12, torch 2.11, no network). Standard library only, so that it starts
with that machine's bare ``python3``:

1. environment: a virtual environment that reuses the interpreter's packages (its torch, numpy, onnxruntime...)
   through a ``.pth`` file, with the carried pure-Python wheels of ``tools/build_wheels.sh`` installed into it
   (``--no-index --no-deps``); ``--no-venv`` runs with the interpreter as it is;
2. stages, most wanted first, each given at most what is left of ``--budget``:

   ============== =============================================================================================
   blocks-bf16    the six blocks at issue 15's shapes against mmcv ``NonLocal2d`` / ``CrissCrossAttention`` and
                  the dense SNL, bf16 autocast: time, allocator peak memory, ``x products`` in bf16
   models-seg-*   Cityscapes FCN and each block head, 512x1024, the configs' batch: training memory (GB),
                  s/iter, inference fps (``benchmark_blocks.py --models``)
   models-i3d-*   I3D R-50 and each block, 32x224x224
   tests          the test suite's CUDA, compile, export and autocast tests (``-k``), on this machine
   blocks-fp16, blocks-fp32, then the fp32 model tables
   ============== =============================================================================================

3. output in ``--out`` (default ``$OUT``): ``summary.md`` (machine, issue 15's targets as measured, every
   table), ``gpu_check.log`` (everything every stage printed) and ``results.tar.gz`` (each stage's files).

Examples::

    bash tools/build_wheels.sh                                   # on a machine with pip: .whl/
    python3 tools/gpu_check.py --wheels .whl                     # on the GPU machine
    python3 tools/gpu_check.py --dry-run                         # the plan, nothing run
    python3 tools/gpu_check.py --device cpu --tiny --no-venv     # the whole pipeline at tiny sizes on a CPU
"""
import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join('tools', 'analysis', 'benchmark_blocks.py')
#: issue 15's GPU shapes: NL against mmcv at the first two, SNL against dense at the third, every block at all
BLOCK_SHAPES = ('2,512,64,64', '1,256,128,128', '1,512,64,128')
TINY_BLOCK_SHAPES = ('1,16,6,8', )
#: ``--tiny``: one variant per family, one image / clip (I3D halves time three times: 8 frames at least)
TINY_MODEL_SHAPES = {'seg': '3,32,64', 'i3d': '3,8,64,64'}
DTYPES = ('bf16', 'fp16', 'fp32')
TEST_PATHS = ('tests/blocks', 'tests/graph')
TEST_EXPRESSION = 'cuda or compile or export or onnx or autocast or fp16'
#: a stage is not started with less than this left of the budget (seconds)
MIN_STAGE_SECONDS = 20


@dataclass
class Stage:
    """One command of the run: ``python ARGV``, stopped after ``cap`` seconds (or what is left of the budget)."""

    name: str
    argv: List[str]
    cap: int
    out_dir: Optional[str] = None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--python', default=sys.executable, help='the interpreter whose torch is used')
    parser.add_argument('--wheels', default=os.path.join(ROOT, '.whl'),
                        help='folder of wheels to install into the environment (tools/build_wheels.sh)')
    parser.add_argument('--venv', default=os.path.join(tempfile.gettempdir(), 'snl_mm_gpu_venv'),
                        help='where the environment is made (replaced if present)')
    parser.add_argument('--no-venv', action='store_true', help='run with --python as it is, install nothing')
    parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'))
    parser.add_argument('--out', default=os.environ.get('OUT') or os.path.join(ROOT, 'work_dirs', 'gpu_check'),
                        help='where the three output files go (default: $OUT)')
    parser.add_argument('--budget', type=int, default=450,
                        help='seconds for the whole run, the environment included; stages that do not fit are '
                        'reported as not run')
    parser.add_argument('--stages', default=None,
                        help='comma-separated stage names to run (default: all, in the order of --dry-run)')
    parser.add_argument('--tests-k', default=TEST_EXPRESSION, help='pytest -k expression of the tests stage')
    parser.add_argument('--tiny', action='store_true', help='tiny shapes and runs: a check of the pipeline')
    parser.add_argument('--dry-run', action='store_true', help='print the plan and exit')
    args = parser.parse_args(argv)
    if args.budget < MIN_STAGE_SECONDS:
        parser.error(f'--budget must be at least {MIN_STAGE_SECONDS} seconds, got {args.budget}')
    known = [s.name for s in plan(argparse.Namespace(**dict(vars(args), stages=None)), '')]
    if args.stages:
        chosen = args.stages.split(',')
        unknown = [s for s in chosen if s not in known]
        if unknown:
            parser.error(f'--stages: unknown {unknown}; the stages are {known}')
    return args


def plan(args: argparse.Namespace, work: str) -> List[Stage]:
    """The stages, most wanted first; with ``--stages`` only those named."""
    tiny = args.tiny
    common = ['--device', args.device, '--in-process', '--repeats', '2' if tiny else '20', '--warmup',
              '1' if tiny else '3']
    shapes = TINY_BLOCK_SHAPES if tiny else BLOCK_SHAPES

    def blocks(dtype: str, cap: int) -> Stage:
        out = os.path.join(work, f'blocks-{dtype}')
        return Stage(f'blocks-{dtype}', [BENCHMARK, '--blocks', 'all', '--shapes', *shapes, '--impls', 'block',
                                         'dense', 'mmcv', '--dtype', dtype, *common, '--out-dir', out], cap, out)

    def models(family: str, dtype: str, cap: int) -> Stage:
        out = os.path.join(work, f'models-{family}-{dtype}')
        size = ['--model-batch', '1', '--model-shape', TINY_MODEL_SHAPES[family]] if tiny else []
        runs = ['--repeats', '1', '--warmup', '1'] if tiny else ['--repeats', '5', '--warmup', '2']
        which = f'{family}/snl' if tiny else family
        argv = [BENCHMARK, '--models', which, '--device', args.device, '--dtype', dtype, *runs, *size, '--out-dir', out]
        return Stage(f'models-{family}-{dtype}', argv, cap, out)

    tests = Stage('tests', ['-m', 'pytest', *TEST_PATHS, '-k', args.tests_k, '-q', '-p', 'no:cacheprovider',
                            '--continue-on-collection-errors', '--disable-warnings', '-rfE'], 120)
    stages = [blocks('bf16', 150), models('seg', 'bf16', 120), models('i3d', 'bf16', 120), tests,
              blocks('fp16', 90), blocks('fp32', 90), models('seg', 'fp32', 120), models('i3d', 'fp32', 120)]
    if args.stages:
        names = args.stages.split(',')
        stages = [s for s in stages if s.name in names]
    return stages


def wheels_in(folder: str) -> List[str]:
    return sorted(glob.glob(os.path.join(folder, '*.whl')))


def make_env(args: argparse.Namespace, log) -> str:
    """The interpreter to run the stages with: ``--python``, or a new environment reusing its packages."""
    if args.no_venv:
        return args.python
    wheels = wheels_in(args.wheels)
    subprocess.run([args.python, '-m', 'venv', '--clear', '--without-pip', args.venv], check=True)
    sites = subprocess.check_output([args.python, '-c', 'import site; print("\\n".join(site.getsitepackages()))'],
                                    text=True).split()
    python = os.path.join(args.venv, 'bin', 'python')
    purelib = subprocess.check_output([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                      text=True).strip()
    # the interpreter's own packages (torch...) after the environment's: a site dir, so its .pth files count
    with open(os.path.join(purelib, 'interpreter_site.pth'), 'w') as f:
        f.writelines(f'import site; site.addsitedir({s!r})\n' for s in sites)
    if wheels:  # the interpreter's pip, into the environment (which has no pip of its own)
        subprocess.run([args.python, '-m', 'pip', 'install', '--quiet', '--no-index', '--no-deps', '--no-compile',
                        '--disable-pip-version-check', '--target', purelib, *wheels], check=True)
    log(f'environment {args.venv}: {args.python} packages ({", ".join(sites)}) + {len(wheels)} wheels from '
        f'{args.wheels}')
    return python


def describe(python: str, device: str) -> Dict[str, str]:
    """Versions and the accelerator, as the stages' interpreter sees them; raises if ``device`` is missing or the
    package does not import."""
    versions = {}
    for code in ('import sys, torch\n'
                 'v = dict(python=sys.version.split()[0], torch=torch.__version__, cuda=str(torch.version.cuda), '
                 'gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")',
                 'import mmengine, mmcv, snl_mm\n'
                 'v = dict(mmengine=mmengine.__version__, mmcv=mmcv.__version__, snl_mm=snl_mm.__version__)'):
        out = subprocess.run([python, '-c', code + '\nimport json; print(json.dumps(v))'], capture_output=True,
                             text=True, env=stage_env(), cwd=ROOT)
        if out.returncode:
            raise RuntimeError(f'the environment does not import what it needs:\n{out.stderr[-3000:]}')
        versions.update(json.loads(out.stdout.strip().splitlines()[-1]))
        if device == 'cuda' and versions['gpu'] == 'none':
            raise RuntimeError(f'--device cuda, but torch {versions["torch"]} sees no CUDA device')
    return versions


def stage_env() -> Dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED='1', MPLBACKEND='Agg', PIP_DISABLE_PIP_VERSION_CHECK='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [ROOT, env.get('PYTHONPATH')]))
    return env


def run_stage(python: str, stage: Stage, seconds: float, log_path: str) -> Dict:
    """Run one stage for at most ``seconds``; its output goes to ``log_path``."""
    start = time.monotonic()
    with open(log_path, 'w') as f:
        proc = subprocess.Popen([python, *stage.argv], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=stage_env(), start_new_session=True)
        try:
            rc = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the stage and any worker it started
            proc.wait()
            rc = 'timeout'
    return dict(name=stage.name, rc=rc, seconds=round(time.monotonic() - start, 1), limit=round(seconds))


def section(stage: Stage, result: Dict, log_path: str) -> str:
    """A stage's part of the summary: its status and its tables (or the end of its output)."""
    head = f"## {stage.name}: {'ok' if result['rc'] == 0 else 'rc ' + str(result['rc'])}, {result['seconds']} s\n"
    with open(log_path) as f:
        text = f.read()
    if stage.name.startswith('models') and stage.out_dir and os.path.exists(os.path.join(stage.out_dir, 'models.md')):
        with open(os.path.join(stage.out_dir, 'models.md')) as f:
            return head + '\n' + f.read()
    if stage.name.startswith('blocks') and result['rc'] == 0:
        lines = [ln for ln in text.splitlines() if ln.startswith('[') or ln[:1].isalpha() or ln.startswith('-')]
    else:
        lines = text.splitlines()[-25:]
    return head + '\n```text\n' + '\n'.join(lines) + '\n```\n'


def targets(out_dir: str) -> List[str]:
    """Issue 15's GPU targets as measured in ``out_dir/results.json`` (a blocks stage's), one table row each."""
    path = os.path.join(out_dir, 'results.json')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        ratios = {(r['block'], tuple(r['shape'])): r for r in json.load(f)['ratios']}
    rows = []

    def row(case: str, target: str, value: Optional[float], limit: float, what: str) -> None:
        met = 'met' if value is not None and value <= limit else ('not measured' if value is None else 'gap')
        rows.append(f"| {case} | {target} | {'-' if value is None else f'{value:.3f}x'} {what} | {met} |")

    for shape in ((2, 512, 64, 64), (1, 256, 128, 128)):
        r = ratios.get(('NLBlock', shape), {})
        row(f'NL vs mmcv NonLocal2d {shape}', '<= 0.5x time', r.get('time_x_mmcv'), 0.5, 'time')
        row(f'NL vs mmcv NonLocal2d {shape}', '<= 0.3x extra memory', r.get('mem_x_mmcv'), 0.3, 'memory')
    r = ratios.get(('SNLBlock', (1, 512, 64, 128)), {})
    row('SNL vs dense (1, 512, 64, 128)', '>= 10x faster', r.get('time_x_dense'), 0.1, 'time')
    row('SNL vs dense (1, 512, 64, 128)', '>= 10x less extra memory', r.get('mem_x_dense'), 0.1, 'memory')
    for (block, shape), r in sorted(ratios.items()):
        row(f'{block} {shape}', '<= 1.5x its products', r.get('time_x_products'), 1.5, 'of products')
    return ['| case | target | measured | |', '|---|---|---|---|'] + rows


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    if args.dry_run:
        wheels = len(wheels_in(args.wheels))
        env = 'as it is' if args.no_venv else \
            f'new environment {args.venv} reusing its packages, + {wheels} wheels from {args.wheels}'

        print(f'interpreter: {args.python} ({env}); device {args.device}; budget {args.budget} s; out {args.out}; '
              'WORK: a temporary folder')
        for s in plan(args, 'WORK'):
            print(f'[{s.name}] at most {s.cap} s: python {" ".join(shlex.quote(a) for a in s.argv)}')
        return 0
    os.makedirs(args.out, exist_ok=True)
    log_file = open(os.path.join(args.out, 'gpu_check.log'), 'w')

    def log(message: str) -> None:
        line = f'[{time.monotonic() - start:6.1f} s] {message}'
        print(line, flush=True)
        log_file.write(line + '\n')
        log_file.flush()

    try:
        python = make_env(args, log)
        info = describe(python, args.device)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        log(f'no run: {err}')
        print(f'gpu_check: {err}', file=sys.stderr)
        log_file.close()
        return 2
    log('machine: ' + ', '.join(f'{k} {v}' for k, v in info.items()))
    work = tempfile.mkdtemp(prefix='snl_mm_gpu_check_')
    stages = plan(args, work)
    summary = [f'# GPU check: {info["gpu"]}', '', '- ' + ', '.join(f'{k} {v}' for k, v in info.items()),
               f'- device {args.device}, budget {args.budget} s' + (', tiny sizes' if args.tiny else ''), '']
    results, sections = [], []
    for stage in stages:
        left = args.budget - (time.monotonic() - start) - 5  # the packing at the end
        if left < MIN_STAGE_SECONDS:
            results.append(dict(name=stage.name, rc='not run: budget spent', seconds=0))
            log(f'{stage.name}: not run, {left:.0f} s of the budget left')
            continue
        log(f'{stage.name}: python {" ".join(shlex.quote(a) for a in stage.argv)}')
        stage_log = os.path.join(work, f'{stage.name}.log')
        result = run_stage(python, stage, min(stage.cap, left), stage_log)
        results.append(result)
        with open(stage_log) as f:
            log_file.write(f.read())
        log(f"{stage.name}: rc {result['rc']} after {result['seconds']} s")
        sections.append(section(stage, result, stage_log))
    summary += ['| stage | result | seconds |', '|---|---|---|']
    summary += [f"| {r['name']} | {'ok' if r['rc'] == 0 else r['rc']} | {r['seconds']} |" for r in results]
    goal = targets(os.path.join(work, 'blocks-bf16'))
    if goal:
        summary += ['', "## Issue 15's GPU targets (bf16 autocast, blocks-bf16)", ''] + goal
    summary += [''] + sections
    with open(os.path.join(args.out, 'summary.md'), 'w') as f:
        f.write('\n'.join(summary) + '\n')
    with tarfile.open(os.path.join(args.out, 'results.tar.gz'), 'w:gz') as tar:
        tar.add(work, arcname='gpu_check')
    shutil.rmtree(work)
    log(f"written: {', '.join(os.path.join(args.out, n) for n in ('summary.md', 'gpu_check.log', 'results.tar.gz'))}")
    log_file.close()
    return 0 if all(r['rc'] == 0 for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
