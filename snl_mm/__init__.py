"""snl-mm: the six nonlocal blocks (NL, NS, A2, CGNL, CC, SNL) of "A unified framework to analyze and design
the nonlocal blocks for neural networks" for the OpenMMLab ecosystem.

``import snl_mm`` (or ``custom_imports = dict(imports=['snl_mm'], allow_failed_imports=False)`` in a config)
first applies :mod:`snl_mm.compat`, the fixes for gaps in the upstream releases, then registers everything
the package offers: the six blocks in mmengine's root ``MODELS``, and the plugin backbones, decode head and
demo dataset in the ``snl_mm`` scope.
"""
from .version import __version__

# compat must come first: it checks versions and patches mmaction2/mmengine before any model module loads.
from . import compat  # noqa: E402,I001
from . import registry  # noqa: E402
from . import graph  # noqa: E402
from . import blocks  # noqa: E402
from . import plugins  # noqa: E402
from . import datasets  # noqa: E402
from . import seg  # noqa: E402
from . import analysis  # noqa: E402

__all__ = ['__version__', 'compat', 'registry', 'graph', 'blocks', 'plugins', 'datasets', 'seg', 'analysis']
