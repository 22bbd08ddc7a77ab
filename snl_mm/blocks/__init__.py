"""The six nonlocal blocks (and the configurable graph block), registered in mmengine's root MODELS."""
from .base import NonlocalBase
from .graph_block import GraphNonlocalBlock
from .nl import NLBlock
from .ns import NSBlock
from .snl import SNLBlock

__all__ = ['NonlocalBase', 'GraphNonlocalBlock', 'NLBlock', 'NSBlock', 'SNLBlock']
