"""Every block of the catalogue, with its defaults and each mode or kernel that changes its numerics: the
parametrisation of the suites that hold for every block (``test_every_block.py``, ``test_tracing.py``,
``tests/deploy``)."""
from typing import Dict, Optional

import torch

import snl_mm  # noqa: F401 (registers the blocks)
from snl_mm.blocks import BLOCK_NAMES, registered_blocks
from snl_mm.registry import ROOT_MODELS
from tests.helpers import randomise_

C = 16

#: the package's registered blocks (the six of the paper and the graph block), by registered name
BLOCKS = [name for name, cls in registered_blocks().items() if cls.__module__.startswith('snl_mm.')]
assert set(BLOCK_NAMES) <= set(BLOCKS), (BLOCK_NAMES, BLOCKS)

#: the modes and kernels that change the numerics, beyond each block's defaults
MODES: Dict[str, Dict[str, dict]] = {
    'NLBlock': {'gaussian': dict(mode='gaussian'), 'dot_product': dict(mode='dot_product'),
                'sub_sample': dict(sub_sample=True)},
    'NSBlock': {'units2': dict(num_units=2)},
    'CGNLBlock': {'dot-g2-scale': dict(kernel='dot', groups=2, use_scale=True),
                  'gaussian': dict(kernel='gaussian', groups=2),
                  'gaussian-g4-o2': dict(kernel='gaussian', groups=4, order=2, gamma=0.05, use_scale=True)},
    'SNLBlock': {'order3-dense': dict(order=3, path='dense'), 'order3-factored': dict(order=3, path='factored'),
                 'order3-units2': dict(order=3, num_units=2)},
    'GraphNonlocalBlock': {'exp-symmetric': dict(
        affinity=dict(kernel='exp_dot', symmetrize=True, normalize='symmetric'))},
}
assert set(MODES) <= set(BLOCKS)

#: ``'NLBlock'``, ``'NLBlock-gaussian'``, ...: every block's defaults, then its modes
VARIANTS: Dict[str, dict] = {name: dict() for name in BLOCKS}
VARIANTS.update({f'{name}-{mode}': cfg for name, modes in MODES.items() for mode, cfg in modes.items()})

#: a spatial shape per rank, small enough for every suite
SPATIAL = {1: (7, ), 2: (5, 6), 3: (3, 4, 5)}


def build(variant: str, in_channels: int = C, std: Optional[float] = 0.3, seed: int = 4) -> torch.nn.Module:
    """The block of ``variant`` with random weights and norms (never the identity); as built (the identity) with
    ``std=None``."""
    name = variant.split('-')[0]
    block = ROOT_MODELS.build(dict(type=name, in_channels=in_channels, **VARIANTS[variant]))
    return block if std is None else randomise_(block, std=std, seed=seed)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
