"""Configs inherited through ``snl_mm::`` build in the scopes they declare, as when read from a checkout.

Upstream code: ``Config._file2dict`` and ``Config._get_cfg_path`` in ``mmengine/config/config.py`` (0.10.7). A
base read through ``pkg::path`` has its dicts tagged ``_scope_='pkg'`` (``Config._dict_to_config_dict``), so
that they build in the registries of ``pkg``: right for the OpenMMLab toolboxes, whose configs name their own
modules. The configs of snl-mm are configs *of* those toolboxes: their models, datasets, transforms and hooks
are mmpretrain's, mmaction2's, mmsegmentation's or mmdetection's, declared by ``default_scope`` and by the
``_scope_`` of their own ``mmpretrain::``... bases; the package's modules are named ``snl_mm.X``. Tagged
``snl_mm``, a user config with ``_base_ = 'snl_mm::demo/preresnet20-snl_relation.py'`` loads but does not build:
``KeyError: 'ImageClassifier is not in the snl_mm::model registry'``.

What snl_mm does: a base read through ``snl_mm::`` is read as a base next to the config is: no ``_scope_`` is
added to its dicts, which keep the scopes their own file and its bases give them. Bases of every other package
keep mmengine's tagging.

Config files are parsed before their ``custom_imports`` are imported, so this fix must be applied before a
config that inherits from ``snl_mm::`` is read: the package's tools and ``mim train snl_mm`` do that; a script
imports :mod:`snl_mm.compat` first.
"""
import functools
from typing import Callable, Optional, Tuple

from mmengine.config import Config

from snl_mm.config_scope import SCOPE


def _patched(original: Callable[[str, str], Tuple[str, Optional[str]]]):

    @functools.wraps(original)
    def _get_cfg_path(cfg_path: str, filename: str) -> Tuple[str, Optional[str]]:
        path, scope = original(cfg_path, filename)
        return path, (None if scope == SCOPE else scope)

    _get_cfg_path.__snl_mm_patched__ = True
    return _get_cfg_path


def gap_present() -> bool:
    """Whether mmengine reads a ``snl_mm::`` base in the ``snl_mm`` scope (asked for one of the package's bases)."""
    try:
        return Config._get_cfg_path(f'{SCOPE}::_base_/blocks.py', '')[1] == SCOPE
    except Exception:  # noqa: BLE001 (the package's configs cannot be found: nothing reads them)
        return False


def is_applied() -> bool:
    """Whether mmengine reads ``snl_mm::`` bases without tagging their scope."""
    return getattr(Config._get_cfg_path, '__snl_mm_patched__', False)


def apply() -> bool:
    """Read ``snl_mm::`` bases as local bases, where mmengine tags them. Idempotent.

    Returns:
        bool: True when in effect (bases of other packages are read as before).
    """
    if not is_applied() and gap_present():
        Config._get_cfg_path = staticmethod(_patched(Config._get_cfg_path))
    return is_applied()
