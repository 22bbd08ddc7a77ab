"""mmengine 0.10.7 cannot find the package directory of an editable install (``pkg::`` configs).

Upstream code: ``get_installed_path`` in ``mmengine/utils/package_utils.py`` (0.10.7), used by
``Config._get_cfg_path`` (``_base_ = 'pkg::...'``) and ``mmengine.hub.get_config``. It returns
``<location of the distribution's metadata>/<import name>``. That holds for a wheel install and for the
``setup.py develop`` installs of setuptools < 64, whose metadata lay in the checkout. An editable install by
pip with setuptools >= 64 (PEP 660) keeps the metadata in ``site-packages`` and imports the package from the
checkout through an import hook, so the returned directory does not exist and every ``pkg::`` config of an
editable install fails with ``FileNotFoundError: file ".../site-packages/<pkg>/.mim/configs/..." does not
exist`` (``pip install -e .`` of snl-mm, and of any OpenMMLab package).

What snl_mm does, where mmengine does not find this package's own editable install: mmengine's function runs
first; only when the directory it names does not exist, the import system is asked where the package is
(``importlib.util.find_spec``), which is where ``import`` finds it, editable or not. A path that exists is returned
unchanged.

mim (``mim train``, ``mim test``) has its own copy of the function and runs in a process that never imports
snl_mm: with an editable install it does not find the package's tools; it works with a regular install
(``pip install .`` or the wheel).
"""
import functools
import importlib.util
import os.path as osp
import warnings
from typing import Callable

import mmengine.config.config as mmengine_config
import mmengine.hub.hub as mmengine_hub
import mmengine.utils as mmengine_utils
import mmengine.utils.package_utils as package_utils

#: the modules that bind mmengine's ``get_installed_path`` under that name
_BINDINGS = (package_utils, mmengine_utils, mmengine_config, mmengine_hub)


def _import_location(path: str) -> str:
    """Where ``import`` finds the package named by the last component of ``path``, or ``path``."""
    spec = importlib.util.find_spec(osp.basename(path))
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return locations[0] if locations else path


def _patched(original: Callable[[str], str]) -> Callable[[str], str]:

    @functools.wraps(original)
    def get_installed_path(package: str) -> str:
        path = original(package)
        return path if osp.isdir(path) else _import_location(path)

    get_installed_path.__snl_mm_patched__ = True
    return get_installed_path


def gap_present() -> bool:
    """Whether mmengine names a missing directory for this package's own distribution (an editable install)."""
    try:
        with warnings.catch_warnings():  # mmengine's pkg_resources import warns (setuptools >= 67)
            warnings.simplefilter('ignore')
            return not osp.isdir(package_utils.get_installed_path('snl-mm'))
    except Exception:  # noqa: BLE001 (not installed as a distribution: run from a checkout on the path)
        return False


def is_applied() -> bool:
    """Whether every binding of ``get_installed_path`` in mmengine is the patched one."""
    return all(getattr(m.get_installed_path, '__snl_mm_patched__', False) for m in _BINDINGS)


def apply() -> bool:
    """Let mmengine find editable installs, where it does not find this package's. Idempotent.

    Returns:
        bool: True when the patch is in place (it changes only answers that name a missing directory).
    """
    if not is_applied() and gap_present():
        patched = _patched(package_utils.get_installed_path)
        for module in _BINDINGS:
            module.get_installed_path = patched
    return is_applied()
