"""The whole-model table in the format of mmsegmentation's model zoo: training memory (GB) and inference speed
(fps) of the Cityscapes FCN baseline and each nonlocal head at 512x1024, and of I3D R-50 with each block at
32x224x224, each at its config's batch per device.

* training memory: on CUDA the caching allocator's peak (``max_memory_allocated``, what mmengine logs as
  ``memory``) over timed SGD steps after warm-up steps: weights, gradients, momentum, inputs and the step's
  activations; on the CPU the same sum, read from the tensors held before a step plus the profiler's peak of
  the step's allocations;
* training time: median of the timed steps (forward, loss, backward, SGD step);
* inference: batch 1, eval mode, ``torch.no_grad``: seg the per-pixel classes at the input size, i3d the class
  probabilities; frames per second = runs / seconds after warm-up runs.

fp32 runs as users train (PyTorch's defaults: cuDNN convolutions may use TF32); ``bf16`` / ``fp16`` under
``torch.autocast`` (no loss scaler: it scales one number).
"""
import gc
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .cases import DTYPES, check_settings
from .memory import profile_memory
from .models import FAMILIES, build_model, count_params, input_size, make_inputs, model_variants

GIB = 2**30


def parse_models(names: Sequence[str], configs: Optional[Path] = None) -> List[Tuple[str, str, Path]]:
    """``['seg', 'i3d/snl']`` -> ``[(family, variant, config), ...]``: a family alone means all its variants.

    Raises:
        ValueError: naming the unknown family or variant and the valid ones.
    """
    chosen = []
    for name in names:
        family, _, variant = name.partition('/')
        variants = model_variants(family, configs)
        if variant and variant not in variants:
            raise ValueError(f'--models {name}: variant {variant!r} of {family!r} must be one of {tuple(variants)}')
        chosen += [(family, v, variants[v]) for v in ([variant] if variant else variants)]
    return chosen


def held_bytes(*groups) -> int:
    """Bytes of the distinct storages of the tensors in ``groups`` (iterables of tensors or None)."""
    seen = {}
    for group in groups:
        for t in group:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def measure_model(family: str, variant: str, config: Path, device: str = 'cpu', dtype: str = 'fp32',
                  steps: int = 3, warmup: int = 2, infer_runs: int = 10, batch: Optional[int] = None,
                  shape: Optional[Sequence[int]] = None, seed: int = 0) -> Dict[str, Any]:
    """One row of the table: the config's model trained and run at its batch and input size (or those given).

    Args:
        family (str): ``'seg'`` or ``'i3d'``.
        variant (str): the row's name (``'fcn'``, ``'snl'``...).
        config (Path): the config file.
        device (str): ``'cpu'`` or ``'cuda'``.
        dtype (str): ``'fp32'``, or ``'bf16'`` / ``'fp16'`` under autocast.
        steps (int): timed training steps (memory is their peak).
        warmup (int): training steps and inference runs before timing.
        infer_runs (int): timed inference runs.
        batch (int, optional): images / clips per step instead of the config's per-device batch.
        shape (sequence[int], optional): one input without batch, e.g. ``(3, 64, 128)``.
        seed (int): seed of weights and inputs.
    """
    from mmengine.config import Config
    check_settings(device, dtype)
    cfg = Config.fromfile(str(config))
    cfg_batch, cfg_shape = input_size(family, cfg)
    batch, shape = batch or cfg_batch, tuple(shape or cfg_shape)
    dev = torch.device(device)
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = bool(cfg.get('env_cfg', {}).get('cudnn_benchmark', False))
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # the defaults
    torch.manual_seed(seed)
    model = build_model(family, cfg).to(dev)
    momentum = cfg.optim_wrapper.optimizer.get('momentum', 0.0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=momentum)
    x, y = (t.to(dev) for t in make_inputs(family, cfg, batch, shape, seed))
    autocast = dict(device_type=dev.type, dtype=DTYPES[dtype], enabled=dtype != 'fp32')

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**autocast):
            loss = model.loss(x, y)
        loss.backward()
        opt.step()
        _sync(dev)

    row = dict(family=family, variant=variant, config=config.name, device=device, dtype=dtype, batch=batch,
               shape=list(shape), params_m=count_params(model) / 1e6, status='ok')
    try:
        for _ in range(warmup):
            step()
        row['train_mem_gib'], row['train_s_per_iter'] = _train(step, dev, steps, model, opt, x, y)
        model.eval()
        one = x[:1]
        with torch.no_grad(), torch.autocast(**autocast):
            row['infer_fps'] = 1.0 / _median_seconds(lambda: (model(one), _sync(dev)), warmup, infer_runs)
    except RuntimeError as err:  # out of memory
        row['status'] = f'failed: {str(err).splitlines()[0][:120]}'
    return row


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _median_seconds(run: Callable[[], Any], warmup: int, runs: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train(step: Callable[[], None], device: torch.device, steps: int, model, opt, x, y) -> Tuple[float, float]:
    """(training memory in GiB, median seconds per step) over ``steps`` steps."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        seconds = _median_seconds(step, 0, steps)
        return torch.cuda.max_memory_allocated(device) / GIB, seconds
    seconds = _median_seconds(step, 0, steps)
    state = [t for s in opt.state.values() for t in s.values()]
    held = held_bytes(model.parameters(), model.buffers(), (p.grad for p in model.parameters()), state, (x, y))
    return (held + profile_memory(step).peak_bytes) / GIB, seconds


def run_models(names: Sequence[str], device: str = 'cpu', dtype: str = 'fp32',
               log: Optional[Callable[[str], None]] = print, **kwargs) -> List[Dict[str, Any]]:
    """:func:`measure_model` for every variant of ``names`` (``'seg'``, ``'i3d'``, ``'seg/snl'``...)."""
    check_settings(device, dtype)
    rows = []
    for family, variant, config in parse_models(names):
        start = time.perf_counter()
        rows.append(measure_model(family, variant, config, device=device, dtype=dtype, **kwargs))
        gc.collect()  # the model of this row is gone before the next one is built
        if device == 'cuda':
            torch.cuda.empty_cache()
        if log is not None:
            r = rows[-1]
            log(f"[{time.perf_counter() - start:6.1f} s] {family}/{variant} {dtype}: "
                + (f"{r['train_mem_gib']:.2f} GiB, {r['train_s_per_iter']:.3f} s/iter, {r['infer_fps']:.2f} fps"
                   if r['status'] == 'ok' else r['status']))
    return rows


def format_model_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The rows as Markdown tables, one per family, in the columns of mmsegmentation's model zoo."""
    out = []
    for family in FAMILIES:
        mine = [r for r in rows if r['family'] == family]
        if not mine:
            continue
        size = 'Crop Size' if family == 'seg' else 'Clip (T x H x W)'
        lines = [f'| Method | Backbone | {size} | Batch | dtype | Params (M) | Mem (GB) | Train (s/iter) | '
                 'Inf time (fps) |', '|---|---|---|---|---|---|---|---|---|']
        for r in mine:
            method = ('FCN' if family == 'seg' else 'I3D') if r['variant'] in ('fcn', 'i3d') else \
                f"{'FCN' if family == 'seg' else 'I3D'} + {r['variant'].upper()}"
            cells = [method, 'R-50-D8' if family == 'seg' else 'R-50', 'x'.join(map(str, r['shape'][1:])),
                     str(r['batch']), r['dtype'], f"{r['params_m']:.2f}"]
            if r['status'] == 'ok':
                cells += [f"{r['train_mem_gib']:.2f}", f"{r['train_s_per_iter']:.3f}", f"{r['infer_fps']:.2f}"]
            else:
                cells += [r['status'], '-', '-']
            lines.append('| ' + ' | '.join(cells) + ' |')
        out.append('\n'.join(lines))
    return '\n\n'.join(out)
