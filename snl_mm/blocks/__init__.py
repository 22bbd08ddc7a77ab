"""The nonlocal blocks, registered in mmengine's root MODELS: the six of the paper, the configurable graph block,
the rest of the family (GC, DNL, ANN, DANet, EMA, ISA, linear attention), and the catalogue that says which
modules they are."""
from .a2 import A2Block
from .base import NonlocalBase
from .catalogue import (ALL_BLOCK_NAMES, BLOCK_NAMES, FAMILY_NAMES, find_blocks, format_spectral_table,
                        is_nonlocal_block, registered_blocks, spectral_table)
from .cc import CCBlock
from .cgnl import CGNLBlock
from .graph_block import GraphNonlocalBlock
from .nl import NLBlock
from .ns import NSBlock
from .snl import SNLBlock
# the family (each module registers its blocks)
from .ann import AFNBBlock, APNBBlock  # noqa: E402
from .danet import CAMBlock, PAMBlock  # noqa: E402
from .dnl import DNLBlock  # noqa: E402
from .ema import EMABlock  # noqa: E402
from .gc import GCBlock  # noqa: E402
from .isa import ISABlock  # noqa: E402
from .linear import LinearAttentionBlock  # noqa: E402

__all__ = [
    'NonlocalBase', 'GraphNonlocalBlock', 'NLBlock', 'NSBlock', 'A2Block', 'CGNLBlock', 'CCBlock', 'SNLBlock',
    'BLOCK_NAMES', 'FAMILY_NAMES', 'ALL_BLOCK_NAMES', 'registered_blocks', 'is_nonlocal_block', 'find_blocks',
    'spectral_table', 'format_spectral_table', 'DNLBlock', 'GCBlock', 'LinearAttentionBlock',
    'APNBBlock', 'AFNBBlock', 'ISABlock', 'PAMBlock', 'CAMBlock', 'EMABlock'
]
