"""The six nonlocal blocks (and the configurable graph block), registered in mmengine's root MODELS."""
from .a2 import A2Block
from .base import NonlocalBase
from .cc import CCBlock
from .cgnl import CGNLBlock
from .graph_block import GraphNonlocalBlock
from .nl import NLBlock
from .ns import NSBlock
from .snl import SNLBlock

__all__ = [
    'NonlocalBase', 'GraphNonlocalBlock', 'NLBlock', 'NSBlock', 'A2Block', 'CGNLBlock', 'CCBlock', 'SNLBlock'
]
