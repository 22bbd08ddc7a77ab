"""A segmentation config with mmcv-lite: one error naming ``tools/build_mmcv.sh``, not mmcv's raw one.

Upstream: mmsegmentation's modules import compiled mmcv operators at import time
(``mmseg/utils/mask_classification.py``: ``from mmcv.ops import point_sample``;
https://github.com/open-mmlab/mmsegmentation/issues/871). The Runner of a config whose ``default_scope`` is
``mmseg`` imports them on its first registry lookup (``Registry.import_from_location`` of mmsegmentation's
registries, the visualizer's first), so with ``mmcv-lite`` training or testing any segmentation config stops
with ``ModuleNotFoundError: No module named 'mmcv._ext'`` deep in mmcv.

What snl_mm does, where mmsegmentation is installed and its models cannot load: before a registry of the
``mmseg`` scope imports its modules, it checks that mmsegmentation's models can load
(:func:`snl_mm.utils.require_mmseg`) and otherwise raises that one ``ImportError`` (compiled mmcv:
``tools/build_mmcv.sh``; or the ``seg`` extra / ``ftfy`` and ``regex``), chained to the import error behind it.
With compiled ops nothing changes. Every config of the package lists :mod:`snl_mm.compat` in its
``custom_imports``, so the check is in place from the config's load on, whatever launches it.
"""
import functools

from mmengine.registry import Registry

from snl_mm.utils import is_installed, mmseg_available, require_mmseg

#: the registry scope whose modules need compiled mmcv
SCOPE = 'mmseg'


def _patched(original):

    @functools.wraps(original)
    def import_from_location(self: Registry) -> None:
        if self.scope == SCOPE and not self._imported:
            require_mmseg(f"A segmentation config (default_scope='{SCOPE}', mmsegmentation's {self.name} registry)")
        original(self)

    import_from_location.__snl_mm_patched__ = True
    return import_from_location


def gap_present() -> bool:
    """Whether mmsegmentation is installed and its models cannot load (no compiled mmcv ops)."""
    return is_installed('mmseg') and not mmseg_available()


def is_applied() -> bool:
    """Whether mmsegmentation's registries check for compiled mmcv before importing their modules."""
    return getattr(Registry.import_from_location, '__snl_mm_patched__', False)


def apply() -> bool:
    """Check for compiled mmcv when an mmsegmentation registry first imports its modules, where they cannot load.
    Idempotent.

    Returns:
        bool: True when the check is in place; False where mmsegmentation's models load (or it is absent).
    """
    if not is_applied() and gap_present():
        Registry.import_from_location = _patched(Registry.import_from_location)
    return is_applied()
