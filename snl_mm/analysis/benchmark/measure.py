"""Measuring one case: the block and its references on one input, interleaved: time, extra peak memory, the
matrix-product floor and the agreement of outputs and input gradients; each case in a fresh process."""
import json
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .cases import (DTYPES, IMPLEMENTATIONS, Case, build_block, check_settings,
                    precision_settings)
from .memory import peak_memory_mib, quiet_stderr
from .references import REFERENCE_LIMIT_BYTES, reference
from .report import fmt

#: operators whose self time is the block's matrix-product floor.
PRODUCT_OPS = frozenset({
    'aten::mm', 'aten::bmm', 'aten::addmm', 'aten::baddbmm', 'aten::addbmm', 'aten::mv', 'aten::addmv',
    'aten::addmm_', 'aten::baddbmm_', 'aten::addbmm_', 'aten::addmv_', 'aten::dot', 'aten::mkldnn_convolution',
    'aten::convolution_backward', 'aten::_slow_conv2d_forward', 'aten::_slow_conv2d_backward',
    'aten::thnn_conv2d', 'aten::cudnn_convolution', 'aten::_scaled_dot_product_flash_attention_for_cpu',
    'aten::_scaled_dot_product_flash_attention_for_cpu_backward',
    'aten::_scaled_dot_product_flash_attention', 'aten::_scaled_dot_product_flash_attention_backward',
    'aten::_scaled_dot_product_efficient_attention',
    'aten::_scaled_dot_product_efficient_attention_backward',
    'aten::_scaled_dot_product_cudnn_attention', 'aten::_scaled_dot_product_cudnn_attention_backward',
    'aten::_efficient_attention_forward', 'aten::_efficient_attention_backward',
    'aten::_flash_attention_forward', 'aten::_flash_attention_backward'
})
#: agreement tolerance of the relative errors (``||y - y_block|| / ||y_block||``, fp32: the specification's)
TOLERANCE = {'fp32': 1e-5, 'fp16': 1e-2, 'bf16': 5e-2}


class Runner:
    """Forward + backward of one module on one input under the case's autocast, gradients reset each time.

    Args:
        module (nn.Module): what runs.
        x (Tensor): input ``(B, C, *S)``, ``requires_grad``.
        grad (Tensor): the output gradient, shaped as ``x``.
        dtype (str): ``'fp32'``, or ``'fp16'`` / ``'bf16'`` under ``torch.autocast``.
    """

    def __init__(self, module: nn.Module, x: Tensor, grad: Tensor, dtype: str):
        self.module = module
        self.x = x
        self.grad = grad
        self.dtype = dtype
        self.params = [p for p in module.parameters() if p.requires_grad]

    def reset(self) -> None:
        self.x.grad = None
        for p in self.params:
            p.grad = None

    def __call__(self, reset: bool = True) -> Tensor:
        if reset:
            self.reset()
        with torch.autocast(self.x.device.type, dtype=DTYPES[self.dtype], enabled=self.dtype != 'fp32'):
            y = self.module(self.x)
        y.backward(self.grad.to(y.dtype))
        if self.x.is_cuda:
            torch.cuda.synchronize(self.x.device)
        return y.detach()


def products_ms(run: Callable[[], Any], device: torch.device, iters: int, time_ms: float) -> float:
    """The time of a run's matrix products (ms): the median over ``iters`` profiled runs.

    CUDA: the summed device time of the kernels the product operators launch. CPU: the share of the run's
    wall time spent in the product operators (their self time), times ``time_ms``: a share, because a
    profiled run is slower than a plain one and the machine's load may differ from the timed runs'; the share
    is read within one run, where both are alike.
    """
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    values = []
    for _ in range(iters):
        with quiet_stderr(), profile(activities=activities) as prof:
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
        events = [e for e in prof.key_averages() if e.key in PRODUCT_OPS]
        if cuda:
            values.append(sum(e.self_device_time_total for e in events) / 1e3)
        else:
            values.append(min(1.0, sum(e.self_cpu_time_total for e in events) / 1e6 / wall) * time_ms)
    return statistics.median(values)


def relative_error(a: Tensor, b: Tensor, scale: Tensor) -> float:
    """``||a - b|| / ||scale||`` in float64 (``||a - b||`` when the scale is zero)."""
    denom = scale.double().norm().item()
    diff = (a.double() - b.double()).norm().item()
    return diff / denom if denom > 0 else diff


def measure_case(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Measure one case in this process; ``spec`` holds the :func:`run_benchmark` settings of the case.

    Returns:
        dict: ``{'rows': [...]}``, one row per implementation.
    """
    case = Case(spec['block'], tuple(spec['shape']), dict(spec.get('cfg', {})))
    device = torch.device(spec['device'])
    dtype = spec['dtype']
    settings = precision_settings(device, dtype)
    torch.manual_seed(spec.get('seed', 0))
    block = build_block(case, spec['device'], spec.get('seed', 0))
    modules = {'block': block}
    notes = {}
    for kind in spec['impls']:
        if kind == 'block':
            continue
        ref, why = reference(kind, block, case.shape, spec.get('reference_limit_bytes', REFERENCE_LIMIT_BYTES))
        if ref is None:
            notes[kind] = why
        else:
            modules[kind] = ref
    gen = torch.Generator().manual_seed(spec.get('seed', 0) + 2)
    x = torch.randn(case.shape, generator=gen).to(device).requires_grad_(True)
    grad = torch.randn(case.shape, generator=gen).to(device)
    runners = {k: Runner(m, x, grad, dtype) for k, m in modules.items()}

    rows = {k: dict(block=case.block, cfg=json.dumps(case.cfg, sort_keys=True), shape=list(case.shape),
                    positions=case.positions, impl=k, device=spec['device'], dtype=dtype, status='ok', **settings)
            for k in spec['impls']}
    for k, why in notes.items():
        rows[k]['status'] = f'skipped: {why}'
    rows['block']['path'] = chosen_path(block, x)

    # agreement (also the first warm-up run of every implementation); a lone memory measurement needs none
    outputs = {}
    for k, run in (runners.items() if len(runners) > 1 or spec.get('time', True) else ()):
        try:
            y = run()
            outputs[k] = (y, x.grad.detach().clone())
        except RuntimeError as err:  # e.g. out of memory on the device
            rows[k]['status'] = f'failed: {str(err).splitlines()[0][:120]}'
    if outputs and 'block' not in outputs:
        return dict(rows=list(rows.values()))
    y0, g0 = outputs.get('block', (None, None))
    for k, (y, g) in outputs.items():
        if k == 'block':
            continue
        rows[k]['err_out'] = relative_error(y, y0, y0)
        rows[k]['err_grad'] = relative_error(g, g0, g0)
        rows[k]['err_branch'] = relative_error(y, y0, y0 - x.detach())
        if max(rows[k]['err_out'], rows[k]['err_grad']) > TOLERANCE[dtype]:
            rows[k]['status'] = 'numbers differ'
    outputs.clear()
    live = [k for k in runners if rows[k]['status'] in ('ok', 'numbers differ')]

    if spec.get('time', True):
        _time(runners, live, rows, spec.get('warmup', 1), spec.get('repeats', 5))
        if spec.get('products', True) and 'block' in live:
            rows['block']['products_ms'] = products_ms(runners['block'], device,
                                                       max(1, min(3, spec.get('repeats', 5))),
                                                       rows['block']['time_ms'])
    if spec.get('memory', True):
        for k in live:
            runners[k].reset()  # the gradients of the last run are not part of the next one's memory
            try:
                rows[k]['peak_mib'] = peak_memory_mib(lambda: runners[k](reset=False), device)
            except RuntimeError as err:  # out of memory on the device
                rows[k]['status'] = f'failed: {str(err).splitlines()[0][:120]}'
            runners[k].reset()
    # the whole process at its peak (model, inputs, every implementation): what a memory limit sees
    rows['block']['process_peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(rows=list(rows.values()))


def _time(runners: Dict[str, Runner], live: List[str], rows: Dict[str, Dict], warmup: int,
          repeats: int) -> None:
    """Median time of each live runner, the runners interleaved round by round, so that a change of the
    machine's load hits them alike (the ratios are what the benchmark is for)."""
    times = {k: [] for k in live}
    for _ in range(warmup - 1):
        for k in live:
            runners[k]()
    for r in range(repeats):
        order = live[r % len(live):] + live[:r % len(live)]
        for k in order:
            start = time.perf_counter()
            runners[k]()
            times[k].append((time.perf_counter() - start) * 1e3)
    for k in live:
        rows[k]['time_ms'] = statistics.median(times[k])
        rows[k]['time_min_ms'] = min(times[k])
        rows[k]['repeats'] = len(times[k])


def chosen_path(block: nn.Module, x: Tensor) -> str:
    """The order of products the block's affinity takes on ``x`` (low-rank affinities), else its kind."""
    from snl_mm.graph import LowRankOperator
    graph_operator = getattr(block, 'graph_operator', None)
    if graph_operator is None:
        return ''
    with torch.no_grad():
        op = graph_operator(x)
    if isinstance(op, LowRankOperator):
        return op.path
    return type(op).__name__.replace('Operator', '').lower()


def run_isolated(fn: Callable[[Dict], Dict], spec: Dict, isolate: bool) -> Dict:
    """``fn(spec)``, in a fresh ``spawn`` process when ``isolate``."""
    if not isolate:
        return fn(spec)
    import multiprocessing
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context('spawn')) as ex:
        return ex.submit(fn, spec).result()


def run_benchmark(cases: Sequence[Case],
                  impls: Sequence[str] = IMPLEMENTATIONS,
                  device: str = 'cpu',
                  dtype: str = 'fp32',
                  repeats: int = 5,
                  warmup: int = 1,
                  memory: bool = True,
                  timing: bool = True,
                  products: bool = True,
                  isolate: bool = True,
                  seed: int = 0,
                  reference_limit_bytes: int = REFERENCE_LIMIT_BYTES,
                  log: Optional[Callable[[str], None]] = print) -> List[Dict[str, Any]]:
    """Measure every case, each in a fresh ``spawn`` process (``isolate=True``).

    Args:
        cases (sequence[Case]): what to measure.
        impls (sequence[str]): among :data:`IMPLEMENTATIONS`; ``'block'`` is always measured.
        device (str): ``'cpu'`` or ``'cuda'``.
        dtype (str): ``'fp32'``, ``'fp16'`` or ``'bf16'`` (the last two under autocast).
        repeats (int): timed runs per implementation.
        warmup (int): untimed runs before (at least the agreement run).
        memory (bool): measure peak memory.
        timing (bool): measure time.
        products (bool): measure the block's matrix-product floor.
        isolate (bool): one fresh process per case (needed for clean CPU memory figures; on CUDA the
            allocator's counters are clean in one process).
        seed (int): seed of weights and inputs.
        reference_limit_bytes (int): references whose ``N x N`` buffers would need more are skipped
            (:func:`~snl_mm.analysis.benchmark.references.reference`).
        log (callable, optional): progress messages.

    Returns:
        list[dict]: one row per (case, implementation).
    """
    check_settings(device, dtype)
    unknown = [i for i in impls if i not in IMPLEMENTATIONS]
    if unknown:
        raise ValueError(f'impls must be among {IMPLEMENTATIONS}, got {unknown}')
    if repeats < 1 or warmup < 1:
        raise ValueError(f'repeats and warmup must be >= 1, got {repeats} and {warmup}')
    impls = ['block'] + [i for i in impls if i != 'block']
    rows: List[Dict[str, Any]] = []
    for case in cases:
        spec = dict(block=case.block, shape=list(case.shape), cfg=case.cfg, impls=impls, device=device,
                    dtype=dtype, repeats=repeats, warmup=warmup, memory=memory, time=timing,
                    products=products, seed=seed, reference_limit_bytes=reference_limit_bytes)
        start = time.perf_counter()
        try:
            result = run_isolated(measure_case, spec, isolate)['rows']
        except BrokenProcessPool:
            result = [dict(block=case.block, cfg=json.dumps(case.cfg, sort_keys=True),
                           shape=list(case.shape), positions=case.positions, impl='block', device=device,
                           dtype=dtype, status='failed: the process died (out of memory?)')]
        rows.extend(result)
        if log is not None:
            log(f'[{time.perf_counter() - start:6.1f} s] {case.name}: ' + '; '.join(
                f"{r['impl']} {fmt(r.get('time_ms'), '{:.1f} ms')} {fmt(r.get('peak_mib'), '{:.0f} MiB')}"
                f"{'' if r['status'] == 'ok' else ' (' + r['status'] + ')'}" for r in result))
    return rows
