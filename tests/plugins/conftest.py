"""Fixtures of the plugin tests: upstream configs edited as a user would, key and weight helpers.

The helpers are handed out as fixtures (the suite runs with ``--import-mode=importlib``, where test modules
cannot import a sibling module by name).
"""
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from torch.nn.modules.batchnorm import _NormBase


def keys_under(state_dict: Dict[str, torch.Tensor], paths: List[str],
               counters: bool = False) -> List[str]:
    """The keys of ``state_dict`` that belong to the modules ``paths``.

    BN's ``num_batches_tracked`` is left out unless ``counters``: BN's loader fills it in when a checkpoint
    lacks it, so torch never reports it missing.
    """
    return sorted(k for k in state_dict if any(k.startswith(p + '.') for p in paths)
                  and (counters or not k.endswith('num_batches_tracked')))


def randomise_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer random affine parameters and running statistics (in place).

    Upstream inits leave BN at weight 1 / bias 0 (or 0 for zero-init residuals), under which many paths are
    trivial; random norms make an identity check meaningful.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (_NormBase, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, _NormBase) and m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


@pytest.fixture(scope='session', name='keys_under')
def keys_under_fixture() -> Callable:
    """:func:`keys_under`."""
    return keys_under


@pytest.fixture(scope='session', name='randomise_norms_')
def randomise_norms_fixture() -> Callable:
    """:func:`randomise_norms_`."""
    return randomise_norms_


@pytest.fixture
def config_from(tmp_path: Path) -> Callable[[str], Config]:
    """Write a config file (as a user edits one) and load it with ``Config.fromfile``."""
    counter = [0]

    def load(text: str) -> Config:
        counter[0] += 1
        path = tmp_path / f'config_{counter[0]}.py'
        path.write_text(text)
        return Config.fromfile(str(path))

    return load
