"""snl-mm: the six nonlocal blocks (NL, NS, A2, CGNL, CC, SNL) of "A unified framework to analyze and design
the nonlocal blocks for neural networks" for the OpenMMLab ecosystem.

The package is built in layers, each importing only the ones before it::

    utils      pure Python: argument checks, version guards, optional packages
    graph      torch: affinities, Chebyshev filters, criss-cross attention, the cost model
    blocks     + mmengine, mmcv: the six blocks and the catalogue, registered in mmengine's root MODELS
    plugins    the insertion mechanism: one route from entries to verified blocks, plugins= on any backbone
    backbones  adapters for mmpretrain, mmaction2, mmsegmentation, mmdetection (each only when installed)
    seg, datasets, analysis   the decode head, the generated datasets, the analysis tools' library

``import snl_mm`` (in a config: ``custom_imports=dict(imports=['snl_mm'])``) registers everything the installed
packages allow: the blocks in mmengine's root ``MODELS``, the backbones, heads and datasets in the ``snl_mm``
scope, ``snl_mm::`` as a config scope (``_base_ = 'snl_mm::demo/...'``), and ``plugins=`` on every backbone config
(:mod:`snl_mm.plugins.build`). Every change to other packages' code is a row of :mod:`snl_mm.patches`: this import
applies two (the registries' build function, mmaction2's missing ``drn`` modules); the fixes for mmengine's gaps,
:mod:`snl_mm.compat`, are imported by the package's tools and by configs that list it.
"""
from .version import __version__
from .utils import check_versions, is_installed

# before anything imports mmaction2 or mmsegmentation, whose own mmcv asserts would fire with a less helpful message
check_versions()

from . import registry  # noqa: E402,I001
from . import config_scope  # noqa: E402  (snl_mm:: in configs)
from . import graph  # noqa: E402
from . import blocks  # noqa: E402
from . import plugins  # noqa: E402
from . import patches  # noqa: E402
patches.apply(patches.SNL_MM)  # before the backbone adapters import mmaction2's models
from . import backbones  # noqa: E402
if is_installed('mmpretrain'):  # the generated datasets are mmpretrain datasets
    from . import datasets  # noqa: E402,F401
from . import seg  # noqa: E402
from . import analysis  # noqa: E402

__all__ = ['__version__', 'registry', 'config_scope', 'graph', 'blocks', 'plugins', 'patches', 'backbones', 'seg',
           'analysis']
