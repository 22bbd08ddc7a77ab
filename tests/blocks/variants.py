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
    'A2Block': {'descriptors3': dict(num_descriptors=3)},
    'SNLBlock': {'factored': dict(path='factored'), 'order3-dense': dict(order=3, path='dense'),
                 'order3-factored': dict(order=3, path='factored'),
                 'order3-units2': dict(order=3, num_units=2)},
    'GraphNonlocalBlock': {'exp-symmetric': dict(
        affinity=dict(kernel='exp_dot', symmetrize=True, normalize='symmetric')),
        'disentangled-order3': dict(affinity=dict(type='disentangled'), graph_filter=dict(order=3)),
        'em-symmetric-order3': dict(affinity=dict(type='em', num_bases=4, normalize='symmetric'),
                                    graph_filter=dict(order=3)),
        'channel-order3': dict(affinity=dict(type='channel_graph', scale='inv_sqrt'), graph_filter=dict(order=3)),
        'anchors-order3': dict(affinity=dict(type='pyramid_anchors', pool_scales=(1, 2, 3)),
                               graph_filter=dict(order=3)),
        'interlaced-order3': dict(affinity=dict(type='interlaced', down_factor=2), graph_filter=dict(order=3))},
    'PAMBlock': {'keys16': dict(key_channels=16)},
    'EMABlock': {'relu': dict(fusion='residual_relu'), 'full': dict(grad='full', num_bases=4, num_stages=2)},
    'GCBlock': {'avg': dict(pooling_type='avg'), 'mul': dict(fusion_types=('channel_mul', )),
                'add-mul': dict(fusion_types=('channel_add', 'channel_mul')),
                'se': dict(pooling_type='avg', fusion_types=('channel_mul', ), norm_cfg=None)},
    'DNLBlock': {'gaussian': dict(mode='gaussian'), 'dot_product': dict(mode='dot_product')},
    'LinearAttentionBlock': {'heads2-factored': dict(heads=2, path='factored')},
    'APNBBlock': {'concat': dict(fusion='concat'), 'stages2': dict(query_scales=(1, 1), pool_scales=(1, 2))},
    'AFNBBlock': {'concat': dict(fusion='concat')},
    'ISABlock': {'concat': dict(fusion='concat'), 'factor2': dict(down_factor=2),
                 'factor3x2': dict(down_factor=(3, 2))},
}
assert set(MODES) <= set(BLOCKS)

#: variants in an upstream form that is not a residual (mmsegmentation's concat fusions; mmcv's channel_mul gate,
#: X / 2 at init, asserted in test_gc.py): not the identity at init
NOT_IDENTITY = {'APNBBlock-concat', 'AFNBBlock-concat', 'ISABlock-concat', 'GCBlock-mul', 'GCBlock-add-mul',
                'GCBlock-se', 'EMABlock-relu'}

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
