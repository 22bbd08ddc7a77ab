"""Library code of ``tools/analysis``: the block benchmark (:mod:`snl_mm.analysis.benchmark`), the
parameter/FLOP counts (:mod:`snl_mm.analysis.flops`) and the attention maps (:mod:`snl_mm.analysis.attention`).

Importing this package is cheap: the submodules (which pull in mmengine's analysis, matplotlib, mmpretrain)
load on first attribute access.
"""
import importlib
from typing import Any

__all__ = ['attention', 'benchmark', 'flops']


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
