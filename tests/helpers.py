"""Helpers every test may use: random weights and norms, relative errors, input makers, state-dict keys.

Test modules import them (``from tests.helpers import randomise_``); the fixtures of ``tests/conftest.py`` hand
out the same functions to tests that prefer fixtures.
"""
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
from torch import Tensor

#: the norm layers :func:`randomise_norms_` gives random affine parameters and statistics
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def rel_err(y: Tensor, y_ref: Tensor) -> float:
    """``||y - y_ref|| / ||y_ref||``."""
    return ((y - y_ref).norm() / y_ref.norm()).item()


def random_input(shape: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """A standard normal tensor of ``shape`` from its own generator (the global random state is untouched)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@torch.no_grad()
def randomise_(module: nn.Module, std: float = 0.5, seed: int = 0) -> nn.Module:
    """Random weights everywhere (never zero) and random norm statistics, in place."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * std)
    randomise_norms_(module, seed=seed + 1)
    return module


@torch.no_grad()
def randomise_norms_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random affine parameters (weights of either sign, ``|w|`` in [0.5, 1.5]) and running statistics of every
    norm layer of ``module`` (BN, IN, GN, LN), in place.

    Upstream inits leave norms at weight 1 / bias 0 (or 0 for zero-init residuals, and a block's output norm),
    under which many paths are trivial; random norms make an identity check meaningful.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(t: Tensor, low: float, high: float) -> Tensor:
        return (torch.rand(t.shape, generator=gen, dtype=torch.float64) * (high - low) + low).to(t.dtype)

    for m in module.modules():
        if isinstance(m, NORMS) and getattr(m, 'weight', None) is not None:
            m.weight.copy_(rand(m.weight, 0.5, 1.5) * torch.where(
                torch.rand(m.weight.shape, generator=gen) < 0.5, -1.0, 1.0).to(m.weight.dtype))
            if m.bias is not None:
                m.bias.copy_(rand(m.bias, -0.5, 0.5))
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            m.running_mean.copy_(rand(m.running_mean, -0.3, 0.3))
            m.running_var.copy_(rand(m.running_var, 0.5, 2.0))
    return module


def keys_under(state_dict: Dict[str, Tensor], paths: List[str], counters: bool = False) -> List[str]:
    """The keys of ``state_dict`` that belong to the modules ``paths``.

    BN's ``num_batches_tracked`` is left out unless ``counters``: BN's loader fills it in when a checkpoint
    lacks it, so torch never reports it missing.
    """
    return sorted(k for k in state_dict if any(k.startswith(p + '.') for p in paths)
                  and (counters or not k.endswith('num_batches_tracked')))


def write_videos(root, items, frames: int = 16, height: int = 48, width: int = 64, seed: int = 0):
    """mmaction2 ``VideoDataset`` files: ``root/videos/<name>.mp4`` for each ``(name, label)`` of ``items`` and the
    annotation list ``root/<split>.txt`` (``path label`` lines) for ``items = {split: [(name, label), ...]}``.

    Each clip is a bright square moving over noise, so that consecutive frames differ as in a real video.
    """
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    for split, entries in items.items():
        for name, _ in entries:
            clip = rng.integers(0, 80, (frames, height, width, 3), dtype=np.uint8)
            for t in range(frames):
                clip[t, 10:26, 2 + 2 * t:18 + 2 * t] = 230
            path = root / 'videos' / name
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 25, (width, height))
            assert writer.isOpened(), 'OpenCV cannot write mp4v videos here'
            for frame in clip:
                writer.write(frame)
            writer.release()
        (root / f'{split}.txt').write_text(''.join(f'{n} {label}\n' for n, label in entries))
    return root


def load_config(path) -> 'mmengine.config.Config':  # noqa: F821
    """``Config.fromfile`` for a config a test hands to an in-process Runner: the same config, kept as written
    instead of formatted by yapf each time the Runner logs or dumps it (over a second per config here, most of a
    tiny run). mmengine 0.10.7's ``fromfile`` drops its own ``format_python_code=False`` for ``.py`` configs, so the
    config is rebuilt with it."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    return Config(cfg.to_dict(), cfg_text=cfg.text, filename=cfg.filename, format_python_code=False)
