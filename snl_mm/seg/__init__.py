"""mmsegmentation integration: :class:`NonlocalHead` (``type='snl_mm.NonlocalHead'`` in configs).

mmsegmentation needs a compiled mmcv (``mmcv.ops``; ``tools/build_mmcv.sh`` builds one). Without it
``import snl_mm`` still works: the name ``snl_mm.NonlocalHead`` stays registered, and building it raises an
ImportError that says how to get the compiled mmcv, instead of a KeyError about an unknown type.
"""
from snl_mm.utils import mmseg_available, require_mmseg
from snl_mm.registry import MODELS

if mmseg_available():
    from .nonlocal_head import NonlocalHead, build_head_block
else:
    build_head_block = None

    @MODELS.register_module(name='NonlocalHead')
    def NonlocalHead(**kwargs):  # noqa: N802 (stands in for the class of the same name)
        """Raise the ImportError of :func:`~snl_mm.utils.require_mmseg` (mmseg cannot load)."""
        require_mmseg('snl_mm.NonlocalHead (the mmsegmentation decode head)')

__all__ = ['NonlocalHead', 'build_head_block']
