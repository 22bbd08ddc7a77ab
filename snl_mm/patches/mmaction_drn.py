"""mmaction2 1.2.0's wheel lacks ``mmaction/models/localizers/drn/``.

Upstream issue: https://github.com/open-mmlab/mmaction2/issues/2714. The published wheel omits the ``drn``
package while ``mmaction/models/localizers/__init__.py`` still runs ``from .drn.drn import DRN``, so
``import mmaction.models`` (and every registry lookup in the ``mmaction`` scope, which imports
``mmaction.models``) fails with ``ModuleNotFoundError: No module named 'mmaction.models.localizers.drn'``.

When, and only when, the installed mmaction2 lacks that package, :func:`apply` places two module objects in
:data:`sys.modules` (``mmaction.models.localizers.drn`` and ``...drn.drn``) whose ``DRN`` raises a clear error
when built; like the real module, the placeholder registers ``DRN`` in mmaction2's ``MODELS`` so that a
config naming it gets that message rather than "not in the registry". Nothing in site-packages is edited;
nothing is imported from ``mmaction.models``, so any other import error of that package still surfaces unchanged.
An mmaction2 that ships ``drn`` is left alone.
"""
import importlib.machinery
import importlib.util
import os.path as osp
import sys
import types
from typing import Any

DRN_PACKAGE = 'mmaction.models.localizers.drn'
UPSTREAM_ISSUE = 'https://github.com/open-mmlab/mmaction2/issues/2714'


class DRN:
    """Placeholder for mmaction2's DRN localizer, absent from the installed wheel.

    Building it raises :class:`ImportError`; every other mmaction2 model is unaffected.

    Raises:
        ImportError: always, naming the upstream issue.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError(
            'DRN is not available: the installed mmaction2 wheel does not ship '
            f'mmaction/models/localizers/drn ({UPSTREAM_ISSUE}). Install mmaction2 from source to use DRN.')


def drn_missing() -> bool:
    """Whether mmaction2 is installed without its ``localizers/drn`` package.

    Only the top-level ``mmaction`` package is located; ``mmaction.models`` is never imported here.

    Returns:
        bool: True when mmaction2 is installed and the ``drn`` package file is absent.
    """
    try:
        spec = importlib.util.find_spec('mmaction')
    except ImportError:  # a finder that knows the package is unusable here
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    localizers = [osp.join(p, 'models', 'localizers') for p in spec.submodule_search_locations]
    if not any(osp.isdir(p) for p in localizers):
        return False
    return importlib.machinery.PathFinder.find_spec('drn', localizers) is None


def is_applied() -> bool:
    """Whether the placeholder modules are installed in :data:`sys.modules`."""
    module = sys.modules.get(DRN_PACKAGE)
    return getattr(module, '__snl_mm_placeholder__', False)


def _placeholder_module(name: str, is_package: bool) -> types.ModuleType:
    module = types.ModuleType(name, f'Placeholder for {name}, missing from the mmaction2 wheel '
                                    f'({UPSTREAM_ISSUE}); installed by snl_mm.patches.mmaction_drn.')
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=is_package)
    if is_package:
        module.__path__ = []
    module.__snl_mm_placeholder__ = True
    return module


def apply() -> bool:
    """Install the ``drn`` placeholders when mmaction2 lacks them. Safe to call any number of times.

    Returns:
        bool: True when the placeholders are in place after the call.
    """
    if DRN_PACKAGE in sys.modules:
        return is_applied()
    if not drn_missing():
        return False
    package = _placeholder_module(DRN_PACKAGE, is_package=True)
    module = _placeholder_module(DRN_PACKAGE + '.drn', is_package=False)
    module.DRN = DRN
    module.__all__ = ['DRN']
    package.drn = module
    package.DRN = DRN
    sys.modules[DRN_PACKAGE] = package
    sys.modules[DRN_PACKAGE + '.drn'] = module
    # mmaction.registry only needs mmengine: registering here does not import mmaction.models.
    from mmaction.registry import MODELS
    if 'DRN' not in MODELS.module_dict:
        MODELS.register_module('DRN', module=DRN)
    return True
