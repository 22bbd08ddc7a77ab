"""Experiments beyond one block: a ResNet training step with and without blocks, and the two orders of products
of a low-rank affinity against each other (where the cost model switches)."""
import json
import math
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .cases import Case, build_block
from .measure import Runner, run_isolated


class GlobalPool(nn.Module):
    """Global average pooling of a backbone's last feature map ``(B, C, H, W) -> (B, C)``."""

    def forward(self, feats) -> Tensor:
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return x.mean(dim=(2, 3))


def measure_model_step(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One SGD training step of an mmpretrain ResNet classifier with and without blocks, interleaved.

    ``spec``: ``depth``, ``shape`` (images ``(B, 3, H, W)``), ``plugins`` (snl_mm.ResNet plugin entries),
    ``repeats``, ``warmup``, ``device``, ``seed``.
    """
    import snl_mm  # noqa: F401  (registries)
    from snl_mm.backbones import ResNet
    device = torch.device(spec['device'])
    shape = tuple(spec['shape'])
    models = {}
    for name, plugins in (('plain', None), ('blocks', spec['plugins'])):
        torch.manual_seed(spec.get('seed', 0))
        # as built: the step's time does not depend on the weights' values
        backbone = ResNet(depth=spec.get('depth', 50), plugins=plugins)
        width = backbone.feat_dim if hasattr(backbone, 'feat_dim') else 2048
        model = nn.Sequential(backbone, GlobalPool(), nn.Linear(width, 1000)).to(device).train()
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


def run_model_step(shape: Sequence[int], plugins: List[Dict], device: str = 'cpu', repeats: int = 5,
                   warmup: int = 1, depth: int = 50, isolate: bool = True, seed: int = 0) -> Dict[str, Any]:
    """Time one training step of ResNet-``depth`` with and without ``plugins`` (:func:`measure_model_step`)."""
    spec = dict(shape=list(shape), plugins=plugins, device=device, repeats=repeats, warmup=warmup,
                depth=depth, seed=seed)
    return run_isolated(measure_model_step, spec, isolate)


def measure_paths(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Time one block with ``path='dense'`` and ``path='factored'`` (same weights), interleaved: where the two
    orders of products of a low-rank affinity cross. ``spec``: ``block``, ``shape``, ``cfg``, ``repeats``,
    ``device``, ``dtype``, ``seed``."""
    from snl_mm.graph import choose_path
    shape = tuple(spec['shape'])
    runners = {}
    gen = torch.Generator().manual_seed(spec.get('seed', 0) + 2)
    x = torch.randn(shape, generator=gen).to(spec['device']).requires_grad_(True)
    grad = torch.randn(shape, generator=gen).to(spec['device'])
    for path in ('dense', 'factored'):
        block = build_block(Case(spec['block'], shape, dict(spec.get('cfg', {}), path=path)), spec['device'],
                            spec.get('seed', 0))
        runners[path] = Runner(block, x, grad, spec.get('dtype', 'fp32'))
        runners[path]()
    times = {k: [] for k in runners}
    for r in range(spec.get('repeats', 7)):
        for k in (('dense', 'factored') if r % 2 == 0 else ('factored', 'dense')):
            start = time.perf_counter()
            runners[k]()
            times[k].append((time.perf_counter() - start) * 1e3)
    dense, factored = (statistics.median(times[k]) for k in ('dense', 'factored'))
    b, c, n = shape[0], runners['dense'].module.inner_channels, math.prod(shape[2:])
    return dict(block=spec['block'], shape=list(shape), positions=n, dense_ms=dense, factored_ms=factored,
                dense_over_factored=dense / factored, model=choose_path(n, n, c, c, True, batch=b))


def run_paths(block: str, shapes: Sequence[Sequence[int]], cfg: Optional[Dict] = None, device: str = 'cpu',
              repeats: int = 7, isolate: bool = True) -> List[Dict[str, Any]]:
    """:func:`measure_paths` for each shape (one fresh process each)."""
    specs = [dict(block=block, shape=list(s), cfg=cfg or {}, device=device, repeats=repeats) for s in shapes]
    return [run_isolated(measure_paths, spec, isolate) for spec in specs]
