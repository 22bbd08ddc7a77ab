"""Library code of ``tools/analysis``: the block benchmark (:mod:`snl_mm.analysis.benchmark`), the
parameter/FLOP counts (:mod:`snl_mm.analysis.flops`), the attention maps (:mod:`snl_mm.analysis.attention`), the
spectral diagnostics (:mod:`snl_mm.analysis.spectrum`), the side-by-side training of the blocks
(:mod:`snl_mm.analysis.compare`; its table, JSON and figures: :mod:`snl_mm.analysis.compare_report`), a config's
model on real samples (:mod:`snl_mm.analysis.inputs`) and the figure style they share
(:mod:`snl_mm.analysis.style`).

Importing this package is cheap: the submodules (which pull in mmengine's analysis, matplotlib, mmpretrain)
load on first attribute access.
"""
import importlib
from typing import Any

__all__ = ['attention', 'benchmark', 'compare', 'compare_report', 'flops', 'inputs', 'spectrum', 'style']


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
