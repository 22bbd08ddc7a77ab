"""mmsegmentation's models need mmcv's compiled operators.

Upstream: ``mmseg/utils/mask_classification.py`` imports ``mmcv.ops.point_sample`` at import time, so with
``mmcv-lite`` (which ships ``mmcv/ops/*.py`` but not the ``mmcv._ext`` extension) ``import mmseg.models``
fails with ``ModuleNotFoundError: No module named 'mmcv._ext'`` (upstream issue:
https://github.com/open-mmlab/mmsegmentation/issues/871). mmcv publishes no compiled wheels for the torch
release tested here, so the compiled mmcv has to be built from its source release.

A second gap appears once mmcv.ops is compiled: ``mmseg/utils/tokenizer.py`` imports ``ftfy`` and ``regex``
at import time although mmsegmentation lists them only as optional (upstream issue:
https://github.com/open-mmlab/mmsegmentation/issues/3704); the ``seg`` extra of snl-mm installs them.

What snl_mm does: nothing is patched. ``import snl_mm`` works either way: :func:`mmseg_available` imports
``mmseg.models`` only when the compiled ops are present (``snl_mm.seg`` then registers the real head), and
segmentation code calls :func:`require_mmseg` (one clear :class:`ImportError`) where they are missing.
``tools/build_mmcv.sh`` builds and installs the compiled mmcv, after which both work.
"""
import functools
import importlib
import importlib.util
from typing import Optional

#: modules mmsegmentation's models import without declaring them as requirements.
MMSEG_UNDECLARED_DEPS = ('ftfy', 'regex')

_REASON: Optional[BaseException] = None


@functools.lru_cache(maxsize=None)
def mmseg_available() -> bool:
    """Whether mmsegmentation's models can be used: compiled ``mmcv.ops`` and ``mmseg.models`` import.

    The result is cached for the process. A missing mmsegmentation, a missing/unloadable compiled mmcv or a
    missing ``ftfy``/``regex`` gives False; any other error raised by ``import mmseg.models`` propagates, so
    real breakage is not reported as "not installed".

    Returns:
        bool: True when ``import mmcv.ops`` and ``import mmseg.models`` both succeed.
    """
    global _REASON
    if importlib.util.find_spec('mmseg') is None:
        _REASON = ModuleNotFoundError("No module named 'mmseg'", name='mmseg')
        return False
    try:
        importlib.import_module('mmcv.ops')
    except ImportError as err:
        # mmcv-lite: no mmcv._ext; a stale build: an extension that does not load against this torch.
        _REASON = err
        return False
    try:
        importlib.import_module('mmseg.models')
    except ModuleNotFoundError as err:
        if err.name not in MMSEG_UNDECLARED_DEPS:
            raise
        _REASON = err
        return False
    return True


def require_mmseg(feature: str) -> None:
    """Raise one clear :class:`ImportError` unless mmsegmentation's models can be used.

    Args:
        feature (str): what needs mmsegmentation, e.g. ``'snl_mm.seg.NonlocalHead'``; starts the message.

    Raises:
        ImportError: ``<feature> needs mmsegmentation, which needs a compiled mmcv (mmcv.ops); install it with
            tools/build_mmcv.sh``, chained to the underlying import error; or, with compiled ops present but
            ``ftfy``/``regex`` missing, a message naming those.
    """
    if mmseg_available():
        return
    if isinstance(_REASON, ModuleNotFoundError) and _REASON.name in MMSEG_UNDECLARED_DEPS:
        raise ImportError(f'{feature} needs mmsegmentation, whose models import {_REASON.name}: install '
                          "snl-mm's `seg` extra (pip install ftfy regex)") from _REASON
    raise ImportError(f'{feature} needs mmsegmentation, which needs a compiled mmcv (mmcv.ops); '
                      'install it with tools/build_mmcv.sh') from _REASON
