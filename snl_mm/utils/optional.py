"""The optional OpenMMLab packages: which are installed, and one clear error when a feature needs a missing one.

snl-mm's core (``snl_mm.graph``, ``snl_mm.blocks``, ``snl_mm.plugins``) needs torch, mmengine and mmcv only.
Each downstream toolbox is an extra of the distribution:

==============  ==================  ===========================================================
package         extra               what needs it
==============  ==================  ===========================================================
mmpretrain      ``cls``             ``snl_mm.ResNet`` & co., ``snl_mm.PreResNet`` in classifiers
mmaction2       ``video``           ``snl_mm.ResNet3d``, video layouts (TSM, TSN, SlowFast...)
mmsegmentation  ``seg``             ``snl_mm.NonlocalHead`` (and a compiled mmcv)
mmdetection     ``det``             detection configs under ``configs/coco``
==============  ==================  ===========================================================

mmsegmentation's models need more than the package: ``mmseg/utils/mask_classification.py`` imports
``mmcv.ops.point_sample`` at import time, so with ``mmcv-lite`` (no ``mmcv._ext``) ``import mmseg.models`` fails
with ``No module named 'mmcv._ext'`` (https://github.com/open-mmlab/mmsegmentation/issues/871); and
``mmseg/utils/tokenizer.py`` imports ``ftfy`` and ``regex`` although they are optional upstream
(https://github.com/open-mmlab/mmsegmentation/issues/3704). :func:`mmseg_available` checks all of it without
failing, :func:`require_mmseg` raises the one error that says what to install (``tools/build_mmcv.sh``).
"""
import functools
import importlib
import importlib.util
from typing import Dict, Optional

#: import name -> (distribution, extra of snl-mm that installs it)
EXTRAS: Dict[str, tuple] = {
    'mmpretrain': ('mmpretrain', 'cls'),
    'mmaction': ('mmaction2', 'video'),
    'mmseg': ('mmsegmentation', 'seg'),
    'mmdet': ('mmdet', 'det'),
}

#: modules mmsegmentation's models import without declaring them as requirements.
MMSEG_UNDECLARED_DEPS = ('ftfy', 'regex')

_MMSEG_REASON: Optional[BaseException] = None


def is_installed(package: str) -> bool:
    """Whether the import package ``package`` can be found (it is not imported)."""
    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:  # a finder that knows the package is unusable here
        return False


def is_usable(package: str) -> bool:
    """Whether ``package``'s models can be used here: installed, and for mmsegmentation also its compiled ops."""
    return mmseg_available() if package == 'mmseg' else is_installed(package)


def install_hint(package: str) -> str:
    """``pip install 'snl-mm[extra]'`` for an optional package (the distribution's name otherwise)."""
    dist, extra = EXTRAS.get(package, (package, None))
    return f"pip install 'snl-mm[{extra}]'" if extra else f'pip install {dist}'


def require(package: str, feature: str) -> None:
    """Raise one :class:`ImportError` naming the extra to install unless ``package`` is installed.

    Args:
        package (str): import name (``'mmaction'``...).
        feature (str): what needs it, e.g. ``'snl_mm.ResNet3d'``; starts the message.
    """
    if package == 'mmseg':
        require_mmseg(feature)
    elif not is_installed(package):
        dist = EXTRAS.get(package, (package, None))[0]
        raise ImportError(f'{feature} needs {dist}, which is not installed: {install_hint(package)}')


@functools.lru_cache(maxsize=None)
def mmseg_available() -> bool:
    """Whether mmsegmentation's models can be used: compiled ``mmcv.ops`` and ``mmseg.models`` import.

    The result is cached for the process. A missing mmsegmentation, a missing/unloadable compiled mmcv or a
    missing ``ftfy``/``regex`` gives False; any other error raised by ``import mmseg.models`` propagates, so
    real breakage is not reported as "not installed".

    Returns:
        bool: True when ``import mmcv.ops`` and ``import mmseg.models`` both succeed.
    """
    global _MMSEG_REASON
    if not is_installed('mmseg'):
        _MMSEG_REASON = ModuleNotFoundError("No module named 'mmseg'", name='mmseg')
        return False
    try:
        importlib.import_module('mmcv.ops')
    except ImportError as err:
        # mmcv-lite: no mmcv._ext; a stale build: an extension that does not load against this torch.
        _MMSEG_REASON = err
        return False
    try:
        importlib.import_module('mmseg.models')
    except ModuleNotFoundError as err:
        if err.name not in MMSEG_UNDECLARED_DEPS:
            raise
        _MMSEG_REASON = err
        return False
    return True


def require_mmseg(feature: str) -> None:
    """Raise one clear :class:`ImportError` unless mmsegmentation's models can be used.

    Args:
        feature (str): what needs mmsegmentation, e.g. ``'snl_mm.NonlocalHead'``; starts the message.

    Raises:
        ImportError: ``<feature> needs mmsegmentation, which needs a compiled mmcv (mmcv.ops); install it with
            tools/build_mmcv.sh``, chained to the underlying import error; with mmsegmentation missing, a
            message naming the ``seg`` extra; with compiled ops present but ``ftfy``/``regex`` missing, a
            message naming those.
    """
    if mmseg_available():
        return
    reason = _MMSEG_REASON
    if isinstance(reason, ModuleNotFoundError) and reason.name == 'mmseg':
        raise ImportError(f'{feature} needs mmsegmentation, which is not installed: {install_hint("mmseg")} '
                          '(and a compiled mmcv: tools/build_mmcv.sh)') from reason
    if isinstance(reason, ModuleNotFoundError) and reason.name in MMSEG_UNDECLARED_DEPS:
        raise ImportError(f'{feature} needs mmsegmentation, whose models import {reason.name}: install '
                          "snl-mm's `seg` extra (pip install ftfy regex)") from reason
    raise ImportError(f'{feature} needs mmsegmentation, which needs a compiled mmcv (mmcv.ops); '
                      'install it with tools/build_mmcv.sh') from reason
