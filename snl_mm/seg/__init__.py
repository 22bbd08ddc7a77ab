"""mmsegmentation integration: :class:`NonlocalHead` (``type='snl_mm.NonlocalHead'`` in configs), and the heads of
the family whose structure is not an FCN's: :class:`DAHead` (DANet), :class:`EMAHead` (EMANet), :class:`ANNHead`
(ANN), :class:`ISAHead` (ISANet).

mmsegmentation needs a compiled mmcv (``mmcv.ops``; ``tools/build_mmcv.sh`` builds one). Without it
``import snl_mm`` still works: the name ``snl_mm.NonlocalHead`` stays registered, and building it raises an
ImportError that says how to get the compiled mmcv, instead of a KeyError about an unknown type.
"""
from snl_mm.utils import mmseg_available, require_mmseg
from snl_mm.registry import MODELS

if mmseg_available():
    from .ann_head import ANNHead
    from .da_head import DAHead
    from .ema_head import EMAHead
    from .isa_head import ISAHead
    from .nonlocal_head import NonlocalHead, build_head_block
else:
    build_head_block = None

    @MODELS.register_module(name='NonlocalHead')
    def NonlocalHead(**kwargs):  # noqa: N802 (stands in for the class of the same name)
        """Raise the ImportError of :func:`~snl_mm.utils.require_mmseg` (mmseg cannot load)."""
        require_mmseg('snl_mm.NonlocalHead (the mmsegmentation decode head)')

    @MODELS.register_module(name='ANNHead')
    def ANNHead(**kwargs):  # noqa: N802 (stands in for the class of the same name)
        """Raise the ImportError of :func:`~snl_mm.utils.require_mmseg` (mmseg cannot load)."""
        require_mmseg('snl_mm.ANNHead (the mmsegmentation decode head)')

    @MODELS.register_module(name='ISAHead')
    def ISAHead(**kwargs):  # noqa: N802 (stands in for the class of the same name)
        """Raise the ImportError of :func:`~snl_mm.utils.require_mmseg` (mmseg cannot load)."""
        require_mmseg('snl_mm.ISAHead (the mmsegmentation decode head)')

    @MODELS.register_module(name='DAHead')
    def DAHead(**kwargs):  # noqa: N802 (stands in for the class of the same name)
        """Raise the ImportError of :func:`~snl_mm.utils.require_mmseg` (mmseg cannot load)."""
        require_mmseg('snl_mm.DAHead (the mmsegmentation decode head)')

    @MODELS.register_module(name='EMAHead')
    def EMAHead(**kwargs):  # noqa: N802 (stands in for the class of the same name)
        """Raise the ImportError of :func:`~snl_mm.utils.require_mmseg` (mmseg cannot load)."""
        require_mmseg('snl_mm.EMAHead (the mmsegmentation decode head)')

__all__ = ['NonlocalHead', 'build_head_block', 'DAHead', 'EMAHead', 'ANNHead', 'ISAHead']
