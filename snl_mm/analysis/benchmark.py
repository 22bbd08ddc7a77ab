"""Benchmark of the nonlocal blocks: training-step time, peak memory and agreement with reference code.

For each case (a block and an input shape ``(B, C, *S)``) the benchmark runs, in one fresh process:

* ``block``: the package's block, built from the registry (zero-initialised output layers are given
  non-zero values first, so that the output is not the identity and the comparison means something);
* ``dense``: the dense formulation of the same block with the same weights. For SNL this is
  :class:`OfficialOrderSNL`, the order of products of the official SNL code (form ``M`` ``N x N``,
  symmetrise, normalise, ``bmm``); for the other graph blocks (NS, ``GraphNonlocalBlock``) the block itself
  with ``path='dense'`` (an explicit ``N x N`` affinity);
* ``mmcv``: mmcv's implementation where one exists, with the block's state dict: ``NonLocal1d/2d/3d`` for
  NL, the pure-PyTorch ``CrissCrossAttention`` (applied ``recurrence`` times, as CCNet does) for CC in 2D;
* ``products``: the block's floor, the time its matrix products alone take: the share of the forward +
  backward spent in GEMM-type operators (``mm``, ``bmm``, ``addmm``, convolutions, fused attention...,
  their self time in ``torch.profiler``) times the block's time.

Measured figures:

* time of one forward + backward (train mode, gradients of the input and of every weight): the median of
  ``repeats`` runs after ``warmup`` runs, the implementations of a case interleaved round by round so that a
  change of machine load hits them alike (the ratios are what the benchmark is for);
* extra peak memory of one forward + backward (gradients included), over what the module, its input and
  the output gradient already hold: on CUDA from the allocator (``max_memory_allocated``); on CPU from the
  profiler's memory records, the peak of the running sum of every tensor allocation and free of the run
  (the resident set of the process is no measure at this scale: glibc keeps freed blocks for reuse, so a
  run's peak hides behind the previous run's);
* agreement: ``||y - y_block|| / ||y_block||`` for the output and the same for the input gradient, on the
  same input and weights (below 1e-5 in fp32: "the same numbers"); ``err_branch`` relates the output
  difference to what the block adds to its input (``y_block - x``), a stricter view.

``fp16`` / ``bf16`` run the fp32 modules under ``torch.autocast``, as mixed-precision training does.
"""
import contextlib
import csv
import gc
import json
import math
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch._C._autograd import DeviceType

#: implementations a case can compare (``products`` is measured on the block itself).
IMPLEMENTATIONS: Tuple[str, ...] = ('block', 'dense', 'mmcv')
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
DEVICES = ('cpu', 'cuda')
#: operators whose self time is the block's matrix-product floor.
PRODUCT_OPS = frozenset({
    'aten::mm', 'aten::bmm', 'aten::addmm', 'aten::baddbmm', 'aten::addbmm', 'aten::mv', 'aten::addmv',
    'aten::addmm_', 'aten::baddbmm_', 'aten::addbmm_', 'aten::addmv_', 'aten::dot', 'aten::mkldnn_convolution', 'aten::convolution_backward',
    'aten::_slow_conv2d_forward', 'aten::_slow_conv2d_backward', 'aten::thnn_conv2d',
    'aten::cudnn_convolution', 'aten::_scaled_dot_product_flash_attention_for_cpu',
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
#: the largest N x N float32 working set the references may allocate (bytes); larger cases skip them
REFERENCE_LIMIT_BYTES = 6 << 30


@dataclass
class Case:
    """One benchmark case.

    Args:
        block (str): registered block type (``'SNLBlock'``...).
        shape (tuple[int]): input ``(B, C, *S)``.
        cfg (dict): extra block arguments (``path='factored'``...).
    """

    block: str
    shape: Tuple[int, ...]
    cfg: Dict[str, Any] = field(default_factory=dict)

    @property
    def positions(self) -> int:
        return math.prod(self.shape[2:])

    @property
    def name(self) -> str:
        cfg = ','.join(f'{k}={v}' for k, v in sorted(self.cfg.items()))
        return f'{self.block}{"[" + cfg + "]" if cfg else ""} {format_shape(self.shape)}'


def format_shape(shape: Sequence[int]) -> str:
    return '(' + ', '.join(str(s) for s in shape) + ')'


def parse_shape(text: str) -> Tuple[int, ...]:
    """``'8,1024,14,14'`` -> ``(8, 1024, 14, 14)``; a shape is ``(B, C, *S)`` with 1 to 3 spatial axes."""
    try:
        shape = tuple(int(s) for s in text.replace('x', ',').split(',') if s.strip())
    except ValueError:
        raise ValueError(f'shape must be comma-separated integers B,C,*S (e.g. 8,1024,14,14), got '
                         f'{text!r}') from None
    if not 3 <= len(shape) <= 5 or min(shape) < 1:
        raise ValueError(f'shape must be B,C,*S with 1 to 3 positive spatial sizes, got {text!r}')
    return shape


# ---------------------------------------------------------------------------------------------------------
# reference implementations
# ---------------------------------------------------------------------------------------------------------
class OfficialOrderSNL(nn.Module):
    """SNL (order 2) in the official code's order of products, for comparison only.

    ``M = relu(theta) relu(phi)^T`` is formed as an ``N x N`` matrix, symmetrised ``(M + M^T) / 2``,
    normalised ``D^-1/2 M D^-1/2`` (``d = 0`` gives a zero row), then ``Y = X + relu(bn(Z W_1 + A Z W_2))``
    with ``A Z`` one ``bmm``. The parameter names are :class:`~snl_mm.blocks.SNLBlock`'s, so its state dict
    loads unchanged. Input ``(B, C, *S)``, any rank (the 1x1 convolutions run on the flattened map).

    Args:
        in_channels (int): ``C``.
        inner_channels (int): ``Cs``.
        bias (bool): bias in the 1x1 convolutions.
        act (bool): the ReLU after the norm.
    """

    def __init__(self, in_channels: int, inner_channels: int, bias: bool = False, act: bool = True):
        super().__init__()
        self.theta = nn.Conv2d(in_channels, inner_channels, 1, bias=bias)
        self.phi = nn.Conv2d(in_channels, inner_channels, 1, bias=bias)
        self.g = nn.Conv2d(in_channels, inner_channels, 1, bias=bias)
        self.w1 = nn.Conv2d(inner_channels, in_channels, 1, bias=bias)
        self.w2 = nn.Conv2d(inner_channels, in_channels, 1, bias=bias)
        self.norm = nn.BatchNorm2d(in_channels)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        xf = x.reshape(b, c, -1, 1)
        t = F.relu(self.theta(xf)).flatten(2).permute(0, 2, 1)  # (B, N, Cs)
        p = F.relu(self.phi(xf)).flatten(2)  # (B, Cs, N)
        att = torch.bmm(t, p)
        att = (att + att.permute(0, 2, 1)) / 2
        d = att.sum(dim=2)
        nonzero = d != 0
        d = torch.where(nonzero, torch.where(nonzero, d, torch.ones_like(d)).rsqrt(), torch.zeros_like(d))
        att = att * d.unsqueeze(1)
        att = att * d.unsqueeze(2)
        g = self.g(xf)  # (B, Cs, N, 1)
        cs = g.shape[1]
        x1 = self.w1(g)
        x2 = torch.bmm(att, g.flatten(2).permute(0, 2, 1))
        x2 = x2.permute(0, 2, 1).contiguous().view(b, cs, -1, 1)
        out = self.norm(x1 + self.w2(x2))
        if self.act:
            out = F.relu(out)
        return x + out.reshape(x.shape)


class Recurrent(nn.Module):
    """Apply one module ``times`` times (CCNet's recurrent criss-cross attention)."""

    def __init__(self, module: nn.Module, times: int):
        super().__init__()
        self.module = module
        self.times = times

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(self.times):
            x = self.module(x)
        return x


def load_matching(module: nn.Module, state_dict: Dict[str, Tensor]) -> None:
    """Load ``state_dict`` strictly, reshaping tensors whose element count matches (1x1 kernels of any
    rank)."""
    own = module.state_dict()
    fixed = {}
    for key, value in state_dict.items():
        target = own.get(key)
        if target is not None and target.shape != value.shape and target.numel() == value.numel():
            value = value.reshape(target.shape)
        fixed[key] = value
    module.load_state_dict(fixed, strict=True)


def _import_criss_cross():
    """mmcv's pure-PyTorch ``CrissCrossAttention`` (needs the compiled mmcv, whose ``mmcv.ops`` imports)."""
    from mmcv.ops import CrissCrossAttention
    return CrissCrossAttention


def reference(kind: str, block: nn.Module, shape: Sequence[int]) -> Tuple[Optional[nn.Module], str]:
    """The ``'dense'`` or ``'mmcv'`` counterpart of ``block`` with its weights, or None and why not.

    Args:
        kind (str): ``'dense'`` or ``'mmcv'``.
        block (nn.Module): a built block.
        shape (sequence[int]): the input shape ``(B, C, *S)``.
    """
    from snl_mm.blocks import CCBlock, GraphNonlocalBlock, NLBlock, SNLBlock
    rank = len(shape) - 2
    b, n = shape[0], math.prod(shape[2:])
    if kind not in ('dense', 'mmcv'):
        raise ValueError(f"reference kind must be 'dense' or 'mmcv', got {kind!r}")
    # the references hold a few (B, N, N) float32 buffers at once
    if 4 * b * n * n * 4 > REFERENCE_LIMIT_BYTES:
        return None, f'N x N reference needs > {REFERENCE_LIMIT_BYTES >> 30} GiB'
    if kind == 'dense':
        if isinstance(block, SNLBlock):
            if block.filter_spec.order != 2 or block.num_units != 1 or block.norm_cfg != dict(type='BN'):
                return None, 'the official order exists for order=2, one unit, BN'
            ref = OfficialOrderSNL(block.in_channels, block.inner_channels, bias=block.g.bias is not None,
                                   act=block.act is not None)
        elif isinstance(block, GraphNonlocalBlock):
            graph = block.graph
            spec = block.filter_spec
            ref = GraphNonlocalBlock(
                block.in_channels, inner_channels=block.inner_channels,
                affinity=dict(kernel=graph.kernel, symmetrize=graph.symmetrize, normalize=graph.normalize,
                              scale=graph.scale, path='dense'),
                graph_filter=dict(order=spec.order, terms=spec.terms,
                                  shared_coefficients=spec.shared_coefficients),
                num_units=block.num_units, bias=block.g.bias is not None, conv_cfg=block.conv_cfg,
                norm_cfg=block.norm_cfg, act_cfg=block.act_cfg)
        else:
            return None, 'no dense formulation'
    else:
        if isinstance(block, NLBlock):
            from mmcv.cnn import NonLocal1d, NonLocal2d, NonLocal3d
            if block.in_channels % block.inner_channels or block.act is not None:
                return None, 'mmcv NonLocal has no such setting'
            cls = {1: NonLocal1d, 2: NonLocal2d, 3: NonLocal3d}[rank]
            norm_cfg = block.norm_cfg
            if norm_cfg is not None and norm_cfg.get('type') in ('BN', 'BN1d', 'BN2d', 'BN3d'):
                norm_cfg = dict(norm_cfg, type={1: 'BN1d', 2: 'BN', 3: 'BN3d'}[rank])  # mmcv's per-rank BN
            ref = cls(block.in_channels, sub_sample=block.sub_sample,
                      reduction=block.in_channels // block.inner_channels, use_scale=block.use_scale,
                      norm_cfg=norm_cfg, mode=block.mode)
        elif isinstance(block, CCBlock):
            if rank != 2 or block.key_channels != block.in_channels // 8:
                return None, 'mmcv CrissCrossAttention is 2D with C/8 keys'
            try:
                cca = _import_criss_cross()
            except Exception as err:  # mmcv-lite: mmcv.ops does not import
                return None, f'mmcv.ops not importable ({type(err).__name__})'
            ref = Recurrent(cca(block.in_channels), block.recurrence)
            load_matching(ref.module, block.state_dict())
            return ref.to(next(block.parameters()).device).train(block.training), ''
        else:
            return None, 'no mmcv implementation'
    load_matching(ref, block.state_dict())
    return ref.to(next(block.parameters()).device).train(block.training), ''


# ---------------------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------------------
def build_block(case: Case, device: str = 'cpu', seed: int = 0) -> nn.Module:
    """The case's block, in train mode, with its zero-initialised parameters given non-zero values."""
    import snl_mm.blocks  # noqa: F401  (registers the blocks)
    from snl_mm.registry import ROOT_MODELS
    torch.manual_seed(seed)
    block = ROOT_MODELS.build(dict(type=case.block, in_channels=case.shape[1], **case.cfg))
    excite(block, seed)
    return block.to(device).train()


def excite(module: nn.Module, seed: int = 0) -> None:
    """Weights of a block in training rather than at its identity init: convolutions get PyTorch's default
    initialisation (the ``N(0, 0.01)`` projections make every affinity nearly uniform, and the output norm
    then divides float rounding by a near-zero spread), and every all-zero parameter (the output norm's
    weight, ``gamma``...) values in ``[0.5, 1.5)``."""
    torch.manual_seed(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                m.reset_parameters()
        for p in module.parameters():
            if p.numel() and not p.any():
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))


class _Runner:
    """Forward + backward of one module on one input, gradients reset each time."""

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
        with torch.autocast(self.x.device.type, dtype=DTYPES[self.dtype],
                            enabled=self.dtype != 'fp32'):
            y = self.module(self.x)
        y.backward(self.grad.to(y.dtype))
        if self.x.is_cuda:
            torch.cuda.synchronize()
        return y.detach()


def peak_memory_mib(run: Callable[[], Any], device: torch.device) -> float:
    """Extra peak memory (MiB) of ``run()`` over what is allocated before it.

    CUDA: the caching allocator's peak (``max_memory_allocated``) minus what was allocated before. CPU: the
    profiler's memory records (every tensor allocation and free of the run, ``profile_memory=True``): the
    peak of their running sum.
    """
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == '[memory]' and e.device_type() == DeviceType.CPU)
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's native start/stop lines (written to file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def products_share(run: Callable[[], Any], device: torch.device, iters: int) -> float:
    """Median over ``iters`` profiled runs of the share of the run's time spent in matrix-product operators
    (their summed self time over the run's wall time).

    A share, not a time: the profiled runs are slower than plain ones, and the machine's load may differ
    from the timed runs'; the share is read within one run, where both are alike.
    """
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    shares = []
    for _ in range(iters):
        with _quiet_stderr(), profile(activities=activities) as prof:
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
        total = 0.0
        for evt in prof.key_averages():
            if evt.key in PRODUCT_OPS:
                total += evt.self_device_time_total if device.type == 'cuda' else evt.self_cpu_time_total
        shares.append(min(1.0, total / 1e6 / wall))
    return statistics.median(shares)


def _relative(a: Tensor, b: Tensor, scale: Tensor) -> float:
    denom = scale.double().norm().item()
    diff = (a.double() - b.double()).norm().item()
    return diff / denom if denom > 0 else diff


def measure_case(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Measure one case in this process; ``spec`` holds the :func:`run_benchmark` settings of the case.

    Returns:
        dict: ``{'rows': [...], 'log': [...]}``, one row per implementation.
    """
    case = Case(spec['block'], tuple(spec['shape']), dict(spec.get('cfg', {})))
    device = torch.device(spec['device'])
    dtype = spec['dtype']
    torch.manual_seed(spec.get('seed', 0))
    block = build_block(case, spec['device'], spec.get('seed', 0))
    modules = {'block': block}
    notes = {}
    for kind in spec['impls']:
        if kind == 'block':
            continue
        ref, why = reference(kind, block, case.shape)
        if ref is None:
            notes[kind] = why
        else:
            modules[kind] = ref
    gen = torch.Generator().manual_seed(spec.get('seed', 0) + 2)
    x = torch.randn(case.shape, generator=gen).to(device).requires_grad_(True)
    grad = torch.randn(case.shape, generator=gen).to(device)
    runners = {k: _Runner(m, x, grad, dtype) for k, m in modules.items()}

    rows = {k: dict(block=case.block, cfg=json.dumps(case.cfg, sort_keys=True), shape=list(case.shape),
                    positions=case.positions, impl=k, device=spec['device'], dtype=dtype, status='ok')
            for k in spec['impls']}
    for k, why in notes.items():
        rows[k]['status'] = f'skipped: {why}'
    rows['block']['path'] = _chosen_path(block, x)

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
        rows[k]['err_out'] = _relative(y, y0, y0)
        rows[k]['err_grad'] = _relative(g, g0, g0)
        rows[k]['err_branch'] = _relative(y, y0, y0 - x.detach())
        if max(rows[k]['err_out'], rows[k]['err_grad']) > TOLERANCE[dtype]:
            rows[k]['status'] = 'numbers differ'
    outputs.clear()
    live = [k for k in runners if rows[k]['status'] in ('ok', 'numbers differ')]

    if spec.get('time', True):
        times = {k: [] for k in live}
        for _ in range(spec.get('warmup', 1) - 1):
            for k in live:
                runners[k]()
        for r in range(spec.get('repeats', 5)):
            order = live[r % len(live):] + live[:r % len(live)]
            for k in order:
                start = time.perf_counter()
                runners[k]()
                times[k].append((time.perf_counter() - start) * 1e3)
        for k in live:
            rows[k]['time_ms'] = statistics.median(times[k])
            rows[k]['time_min_ms'] = min(times[k])
            rows[k]['repeats'] = len(times[k])
        if spec.get('products', True) and 'block' in live:
            share = products_share(runners['block'], device, max(1, min(3, spec.get('repeats', 5))))
            rows['block']['products_ms'] = share * rows['block']['time_ms']
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


def _chosen_path(block: nn.Module, x: Tensor) -> str:
    """The order of products the block's affinity takes on ``x`` (low-rank affinities), else its kind."""
    from snl_mm.graph import LowRankOperator
    graph_operator = getattr(block, 'graph_operator', None)
    if graph_operator is None:
        return ''
    with torch.no_grad():
        op = graph_operator(x[:1])
    if isinstance(op, LowRankOperator):
        b, n_q, n_k, c = op._shape
        from snl_mm.graph import choose_path
        return choose_path(n_q, n_k, c, c, op.symmetrize, batch=x.shape[0], path=op.requested_path)
    return type(op).__name__.replace('Operator', '').lower()


def measure_model_step(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One SGD training step of an mmpretrain ResNet classifier with and without blocks, interleaved.

    ``spec``: ``depth``, ``shape`` (images ``(B, 3, H, W)``), ``plugins`` (snl_mm.ResNet plugin entries),
    ``repeats``, ``warmup``, ``device``, ``seed``.
    """
    import snl_mm  # noqa: F401  (compat, registries)
    from snl_mm.backbones import ResNet
    device = torch.device(spec['device'])
    shape = tuple(spec['shape'])
    models = {}
    for name, plugins in (('plain', None), ('blocks', spec['plugins'])):
        torch.manual_seed(spec.get('seed', 0))
        # as built: the step's time does not depend on the weights' values
        backbone = ResNet(depth=spec.get('depth', 50), plugins=plugins)
        width = backbone.feat_dim if hasattr(backbone, 'feat_dim') else 2048
        model = nn.Sequential(backbone, _Pool(), nn.Linear(width, 1000)).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        models[name] = (model, opt)
    gen = torch.Generator().manual_seed(spec.get('seed', 0) + 3)
    images = torch.randn(shape, generator=gen).to(device)
    labels = torch.randint(0, 1000, (shape[0],), generator=gen).to(device)

    def step(name: str) -> None:
        model, opt = models[name]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    names = list(models)
    for _ in range(spec.get('warmup', 1)):
        for name in names:
            step(name)
    times = {name: [] for name in names}
    for r in range(spec.get('repeats', 5)):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            step(name)
            times[name].append((time.perf_counter() - start) * 1e3)
    params = {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in models.items()}
    return dict(shape=list(shape), device=spec['device'], plugins=json.dumps(spec['plugins']),
                plain_ms=statistics.median(times['plain']), blocks_ms=statistics.median(times['blocks']),
                ratio=statistics.median(times['blocks']) / statistics.median(times['plain']),
                plain_params=params['plain'], blocks_params=params['blocks'], repeats=len(times['plain']))


def measure_paths(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Time one block with ``path='dense'`` and ``path='factored'`` (same weights), interleaved: where the two
    orders of products of a low-rank affinity cross. ``spec``: ``block``, ``shape``, ``cfg``, ``repeats``,
    ``device``, ``dtype``, ``seed``."""
    shape = tuple(spec['shape'])
    runners = {}
    gen = torch.Generator().manual_seed(spec.get('seed', 0) + 2)
    x = torch.randn(shape, generator=gen).to(spec['device']).requires_grad_(True)
    grad = torch.randn(shape, generator=gen).to(spec['device'])
    for path in ('dense', 'factored'):
        block = build_block(Case(spec['block'], shape, dict(spec.get('cfg', {}), path=path)), spec['device'],
                            spec.get('seed', 0))
        runners[path] = _Runner(block, x, grad, spec.get('dtype', 'fp32'))
        runners[path]()
    times = {k: [] for k in runners}
    for r in range(spec.get('repeats', 7)):
        for k in (('dense', 'factored') if r % 2 == 0 else ('factored', 'dense')):
            start = time.perf_counter()
            runners[k]()
            times[k].append((time.perf_counter() - start) * 1e3)
    dense, factored = (statistics.median(times[k]) for k in ('dense', 'factored'))
    from snl_mm.graph import choose_path
    b, c, n = shape[0], runners['dense'].module.inner_channels, math.prod(shape[2:])
    return dict(block=spec['block'], shape=list(shape), positions=n, dense_ms=dense, factored_ms=factored,
                dense_over_factored=dense / factored, model=choose_path(n, n, c, c, True, batch=b))


def run_paths(block: str, shapes: Sequence[Sequence[int]], cfg: Optional[Dict] = None, device: str = 'cpu',
              repeats: int = 7, isolate: bool = True) -> List[Dict[str, Any]]:
    """:func:`measure_paths` for each shape (one fresh process each)."""
    return [_run_isolated(measure_paths, dict(block=block, shape=list(s), cfg=cfg or {}, device=device,
                                                repeats=repeats), isolate) for s in shapes]


class _Pool(nn.Module):

    def forward(self, feats) -> Tensor:
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------------------
# running cases in fresh processes
# ---------------------------------------------------------------------------------------------------------
def _run_isolated(fn: Callable[[Dict], Dict], spec: Dict, isolate: bool) -> Dict:
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
        isolate (bool): one fresh process per case (needed for clean CPU memory figures).
        seed (int): seed of weights and inputs.
        log (callable, optional): progress messages.

    Returns:
        list[dict]: one row per (case, implementation).
    """
    if device not in DEVICES:
        raise ValueError(f'device must be one of {DEVICES}, got {device!r}')
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {tuple(DTYPES)}, got {dtype!r}')
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
                    products=products, seed=seed)
        start = time.perf_counter()
        try:
            result = _run_isolated(measure_case, spec, isolate)['rows']
        except BrokenProcessPool:
            result = [dict(block=case.block, cfg=json.dumps(case.cfg, sort_keys=True),
                           shape=list(case.shape), positions=case.positions, impl='block', device=device,
                           dtype=dtype, status='failed: the process died (out of memory?)')]
        rows.extend(result)
        if log is not None:
            log(f'[{time.perf_counter() - start:6.1f} s] {case.name}: ' + '; '.join(
                f"{r['impl']} {_fmt(r.get('time_ms'), '{:.1f} ms')} {_fmt(r.get('peak_mib'), '{:.0f} MiB')}"
                f"{'' if r['status'] == 'ok' else ' (' + r['status'] + ')'}" for r in result))
    return rows


def run_model_step(shape: Sequence[int], plugins: List[Dict], device: str = 'cpu', repeats: int = 5,
                   warmup: int = 1, depth: int = 50, isolate: bool = True, seed: int = 0) -> Dict[str, Any]:
    """Time one training step of ResNet-``depth`` with and without ``plugins`` (:func:`measure_model_step`)."""
    spec = dict(shape=list(shape), plugins=plugins, device=device, repeats=repeats, warmup=warmup,
                depth=depth, seed=seed)
    return _run_isolated(measure_model_step, spec, isolate)


# ---------------------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------------------
def _fmt(value: Optional[float], pattern: str, missing: str = '-') -> str:
    return missing if value is None else pattern.format(value)


def ratio_table(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One summary per case: the block's figures and its ratios to each reference.

    ``time x dense`` is block time / dense time (below 1: the block is faster); ``mem x dense`` the same
    for extra peak memory; ``time x products`` is block time / its matrix-product floor.
    """
    cases: Dict[Tuple, Dict[str, Dict]] = {}
    for r in rows:
        key = (r['block'], r.get('cfg', '{}'), tuple(r['shape']), r['device'], r['dtype'])
        cases.setdefault(key, {})[r['impl']] = r
    table = []
    for (block, cfg, shape, device, dtype), impls in cases.items():
        own = impls.get('block', {})
        entry = dict(block=block, cfg=cfg, shape=list(shape), positions=math.prod(shape[2:]), device=device,
                     dtype=dtype, path=own.get('path', ''), time_ms=own.get('time_ms'),
                     peak_mib=own.get('peak_mib'), products_ms=own.get('products_ms'),
                     status=own.get('status', 'missing'))
        if own.get('time_ms') and own.get('products_ms'):
            entry['time_x_products'] = own['time_ms'] / own['products_ms']
        for kind in ('dense', 'mmcv'):
            ref = impls.get(kind)
            if ref is None:
                continue
            entry[f'{kind}_status'] = ref['status']
            if ref.get('time_ms') and own.get('time_ms'):
                entry[f'time_x_{kind}'] = own['time_ms'] / ref['time_ms']
                entry[f'{kind}_time_ms'] = ref['time_ms']
            if ref.get('peak_mib') and own.get('peak_mib') is not None:
                entry[f'mem_x_{kind}'] = own['peak_mib'] / ref['peak_mib']
                entry[f'{kind}_peak_mib'] = ref['peak_mib']
            for e in ('err_out', 'err_grad', 'err_branch'):
                if e in ref:
                    entry[f'{kind}_{e}'] = ref[e]
        table.append(entry)
    return table


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The ratio table as aligned text."""
    header = ['case', 'path', 'time ms', 'extra MiB', 'x products', 'dense: time', 'mem', 'err',
              'mmcv: time', 'mem', 'err']
    lines = [header]
    for e in ratio_table(rows):
        cfg = json.loads(e['cfg'])
        name = e['block'] + (f"[{','.join(f'{k}={v}' for k, v in cfg.items())}]" if cfg else '')
        cells = [f"{name} {format_shape(e['shape'])}", e['path'] or '-', _fmt(e['time_ms'], '{:.1f}'),
                 _fmt(e['peak_mib'], '{:.1f}'), _fmt(e.get('time_x_products'), '{:.2f}x')]
        for kind in ('dense', 'mmcv'):
            status = e.get(f'{kind}_status')
            if status is None or status.startswith('skipped') or status.startswith('failed'):
                cells += ['-', '-', (status or '-').split(':')[0]]
                continue
            err = max(e.get(f'{kind}_err_out', 0.0), e.get(f'{kind}_err_grad', 0.0))
            cells += [_fmt(e.get(f'time_x_{kind}'), '{:.2f}x'), _fmt(e.get(f'mem_x_{kind}'), '{:.3f}x'),
                      f'{err:.1e}' + ('' if status == 'ok' else ' !')]
        if e['status'] != 'ok':
            cells[0] += f" ({e['status']})"
        lines.append(cells)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for j, line in enumerate(lines):
        out.append('  '.join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))))
        if j == 0:
            out.append('-' * len(out[0]))
    return '\n'.join(out)


def memory_scaling(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """For each (block, implementation, B, C) measured at several ``N``: the extra peak memory at each ``N``
    and its growth factor from the previous ``N`` (linear memory: about 2 when ``N`` doubles)."""
    series: Dict[Tuple, List[Tuple[int, float]]] = {}
    for r in rows:
        if r.get('peak_mib') is None or r['status'] not in ('ok', 'numbers differ'):
            continue
        key = (r['block'], r.get('cfg', '{}'), r['impl'], r['shape'][0], r['shape'][1], r['device'], r['dtype'])
        series.setdefault(key, []).append((r['positions'], r['peak_mib']))
    out = []
    for (block, cfg, impl, b, c, device, dtype), points in series.items():
        points.sort()
        if len(points) < 2:
            continue
        steps = [dict(positions=n, peak_mib=m, growth=(m / points[i - 1][1]) if i else None,
                      n_growth=(n / points[i - 1][0]) if i else None) for i, (n, m) in enumerate(points)]
        out.append(dict(block=block, cfg=cfg, impl=impl, batch=b, channels=c, device=device, dtype=dtype,
                        steps=steps, max_growth_per_doubling=max(
                            math.log(s['growth']) / math.log(s['n_growth']) * math.log(2) for s in steps[1:])))
    return out


def format_scaling(rows: Sequence[Dict[str, Any]]) -> str:
    """The memory growth of :func:`memory_scaling` as text (empty when no block ran at several ``N``)."""
    lines = []
    for s in memory_scaling(rows):
        cells = ', '.join(f"N={st['positions']}: {st['peak_mib']:.1f}" +
                          (f" (x{st['growth']:.2f})" if st['growth'] else '') for st in s['steps'])
        exponent = s['max_growth_per_doubling']
        lines.append(f"{s['block']} {s['impl']} (B={s['batch']}, C={s['channels']}) extra MiB: {cells}; "
                     f"largest growth per doubling of N: x{math.exp(exponent):.2f}")
    return '\n'.join(lines)


CSV_FIELDS = ('block', 'cfg', 'shape', 'positions', 'impl', 'path', 'device', 'dtype', 'time_ms',
              'time_min_ms', 'repeats', 'products_ms', 'peak_mib', 'process_peak_rss_mib', 'err_out',
              'err_grad', 'err_branch', 'status')


def write_results(rows: Sequence[Dict[str, Any]], out_dir: str, plot: bool = True,
                  extra: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Write ``results.json`` (rows, ratio table, machine), ``results.csv`` (rows) and ``benchmark.png``.

    Returns:
        dict: the written paths by kind.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(json=os.path.join(out_dir, 'results.json'), csv=os.path.join(out_dir, 'results.csv'))
    payload = dict(machine=machine_info(), rows=list(rows), ratios=ratio_table(rows),
                   memory_scaling=memory_scaling(rows))
    if extra:
        payload.update(extra)
    with open(paths['json'], 'w') as f:
        json.dump(payload, f, indent=1)
    with open(paths['csv'], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, 'shape': 'x'.join(str(s) for s in r['shape'])})
    if plot:
        paths['png'] = os.path.join(out_dir, 'benchmark.png')
        plot_results(rows, paths['png'])
    return paths


def plot_results(rows: Sequence[Dict[str, Any]], path: str) -> None:
    """Log-log plot of time and extra peak memory against ``N``, one line per (block, implementation, B, C)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    series: Dict[str, List[Tuple[int, Optional[float], Optional[float]]]] = {}
    for r in rows:
        if r['status'] not in ('ok', 'numbers differ'):
            continue
        label = f"{r['block']} {r['impl']} B={r['shape'][0]} C={r['shape'][1]}"
        series.setdefault(label, []).append((r['positions'], r.get('time_ms'), r.get('peak_mib')))
    for label, points in sorted(series.items()):
        points.sort()
        for ax, idx in ((axes[0], 1), (axes[1], 2)):
            pts = [(p[0], p[idx]) for p in points if p[idx] is not None and p[idx] > 0]
            if pts:
                ax.plot(*zip(*pts), marker='o', label=label)
    for ax, title in ((axes[0], 'forward + backward time (ms)'), (axes[1], 'extra peak memory (MiB)')):
        ax.set_title(title)
        if not ax.lines:  # --no-time / --no-memory
            ax.text(0.5, 0.5, 'not measured', ha='center', va='center', transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xlabel('positions N')
        ax.grid(True, which='both', alpha=0.3)
    drawn = [ax for ax in axes if ax.lines]
    if drawn:  # one legend, on the first panel with lines
        drawn[0].legend(fontsize=6, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_info() -> Dict[str, Any]:
    """CPU model, cores, torch version and (when used) the GPU."""
    info: Dict[str, Any] = dict(torch=torch.__version__, threads=torch.get_num_threads(),
                                cpus=os.cpu_count(), python=sys.version.split()[0])
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
    return info
