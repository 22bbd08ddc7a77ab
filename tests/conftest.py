"""Shared pytest set-up for the snl_mm test suite.

``import snl_mm`` happens here, once, so every test runs with the compatibility layer applied and every
block, backbone and dataset registered, exactly as a config with ``custom_imports=['snl_mm']`` sees them.
Tests that must observe a fresh interpreter (import order, worker processes) start one with
:func:`subprocess_env`.
"""
import os
import socket
import sys
from pathlib import Path
from typing import Dict, List

import pytest

# headless plotting for the analysis tests, before anything imports matplotlib
os.environ.setdefault('MPLBACKEND', 'Agg')

import snl_mm  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_report_header(config) -> List[str]:
    import mmcv
    import mmengine
    import torch

    from snl_mm.compat import mmseg_available
    ops = 'compiled ops' if mmseg_available() else 'no compiled ops (mmcv-lite)'
    return [f'snl_mm {snl_mm.__version__}: torch {torch.__version__}, mmengine {mmengine.__version__}, '
            f'mmcv {mmcv.__version__} ({ops}), compat {snl_mm.compat.APPLIED}']


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """The checkout's root directory."""
    return REPO_ROOT


@pytest.fixture
def subprocess_env() -> Dict[str, str]:
    """Environment for a child Python: the checkout on ``PYTHONPATH``, one OpenMP thread per process."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
    env['OMP_NUM_THREADS'] = '1'
    return env


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (the checkout's ``.venv`` under ``make test``)."""
    return sys.executable


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
