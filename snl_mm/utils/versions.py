"""Version guards for the OpenMMLab stack snl_mm is built and tested against.

mmcv and mmengine evolve in lock-step with the downstream codebases: mmaction2 1.2 and mmsegmentation 1.2
assert ``mmcv < 2.2.0`` at import time, and mmcv's own distributions come in two flavours that install the
same ``mmcv`` import package (``mmcv-lite`` without compiled ops, ``mmcv`` with them). pip cannot express
"either distribution", so ``setup.cfg`` does not require one by name; this module checks what is actually
importable and stops with one message naming every supported range instead of a failure deep inside an
upstream import (mmaction2's ``AssertionError: MMCV==2.2.0 is used but incompatible``).
"""
from importlib import import_module
from typing import Dict, Optional, Tuple

from packaging.version import InvalidVersion, Version

#: import name -> (distribution(s) shown to users, minimum inclusive, maximum exclusive or None).
SUPPORTED: Dict[str, Tuple[str, str, Optional[str]]] = {
    'torch': ('torch', '2.1.0', None),
    'mmengine': ('mmengine', '0.10.0', '1.0.0'),
    'mmcv': ('mmcv-lite or mmcv', '2.0.0', '2.2.0'),
}


def supported_ranges() -> str:
    """Return the supported ranges as one human-readable string.

    Returns:
        str: e.g. ``'torch>=2.1.0, mmengine>=0.10.0,<1.0.0, mmcv-lite or mmcv>=2.0.0,<2.2.0'``.
    """
    parts = []
    for dist, low, high in SUPPORTED.values():
        parts.append(f'{dist}>={low}' + (f',<{high}' if high else ''))
    return ', '.join(parts)


def is_supported(package: str, version: str) -> bool:
    """Whether ``version`` of ``package`` lies in its supported range.

    Local and pre-release tags count by their release number (``2.1.0+cpu`` and ``2.1.0rc4`` are 2.1.0):
    OpenMMLab release candidates and PyTorch's ``+cpu``/``+cu121`` builds share the API of the release.

    Args:
        package (str): an import name, one of the keys of :data:`SUPPORTED`.
        version (str): the version string that package reports.

    Returns:
        bool: True when ``minimum <= version < maximum``.

    Raises:
        KeyError: ``package`` is not one of the guarded packages.
        ValueError: ``version`` is not a PEP 440 version.
    """
    if package not in SUPPORTED:
        raise KeyError(f'package must be one of {sorted(SUPPORTED)}, got {package!r}')
    try:
        release = Version(Version(version).base_version)
    except InvalidVersion as err:
        raise ValueError(f'{package} reports an invalid version {version!r}') from err
    _, low, high = SUPPORTED[package]
    return release >= Version(low) and (high is None or release < Version(high))


def check_version(package: str, version: str) -> None:
    """Raise :class:`ImportError` when ``version`` of ``package`` is unsupported.

    Args:
        package (str): an import name, one of the keys of :data:`SUPPORTED`.
        version (str): the version string that package reports.

    Raises:
        ImportError: the version is outside the supported range; the message names every supported range.
    """
    if not is_supported(package, version):
        dist = SUPPORTED[package][0]
        raise ImportError(
            f'snl_mm does not support {dist} {version}. Supported: {supported_ranges()}. '
            'Install the tested set with `pip install -c requirements/constraints.txt -e .` '
            '(or `make test`); a compiled mmcv comes from `tools/build_mmcv.sh`.')


def check_versions() -> None:
    """Check the installed torch, mmengine and mmcv against :data:`SUPPORTED`.

    Raises:
        ImportError: one of them is missing or outside its supported range.
    """
    for package in SUPPORTED:
        try:
            module = import_module(package)
        except ModuleNotFoundError as err:
            if err.name != package:
                raise
            raise ImportError(f'snl_mm needs {SUPPORTED[package][0]}; supported: {supported_ranges()}. '
                              'Install the tested set with `make test` or '
                              '`pip install -c requirements/constraints.txt -e .`') from err
        check_version(package, module.__version__)
