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
