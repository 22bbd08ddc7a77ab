"""Shared pytest set-up for the snl_mm test suite.

``import snl_mm`` and ``import snl_mm.compat`` happen here, once, so every test runs with every block, backbone
and dataset registered and the compatibility layer applied, exactly as a config with
``custom_imports=dict(imports=['snl_mm', 'snl_mm.compat'])`` sees them (``tests/test_core_only.py`` checks,
in fresh interpreters, that ``import snl_mm`` alone applies nothing).
Tests that must observe a fresh interpreter (import order, worker processes) start one with
:func:`subprocess_env`.

Two tiers: the unit tier, and the integration tier (marker ``slow``, assigned here by :data:`SLOW_PATHS` and
:data:`SLOW_FIXTURES` so that test files need not mark themselves; a test may also carry ``@pytest.mark.slow``).
``make test-fast`` runs the unit tier (``-m "not slow"``) for the edit loop; ``make test`` (CI) runs both.
"""
import os
import socket
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.helpers import keys_under, randomise_norms_

# headless plotting for the analysis tests, before anything imports matplotlib
os.environ.setdefault('MPLBACKEND', 'Agg')

import snl_mm  # noqa: E402
import snl_mm.compat  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]

#: the integration tier by place (a test id's start: a folder, a file, a test): Runners that train and evaluate
#: configs, launched tools and processes, whole backbones and detectors of the toolboxes (every backbone of the
#: matrix), models traced and exported, wheels and compiled builds, and the sweeps of every block over dtypes and
#: inputs (the unit tier keeps each block's shape, identity, independence and autocast checks)
SLOW_PATHS = (
    'tests/configs/', 'tests/tools/', 'tests/packaging/', 'tests/det/', 'tests/deploy/', 'tests/analysis/',
    'tests/seg/',
    'tests/backbones/', 'tests/plugins/test_traceable.py', 'tests/plugins/test_plugin_training.py',
    'tests/plugins/test_exactly_once.py', 'tests/compat/test_crash_resume.py', 'tests/compat/test_exact_resume.py',
    'tests/compat/test_resume_fallback.py', 'tests/compat/test_dist.py', 'tests/compat/test_runner_alone.py',
    'tests/compat/test_checkpoint.py', 'tests/blocks/test_every_block.py::test_finite_output',
    'tests/blocks/test_precision_matrix.py::test_precision_matrix',
)
#: ... and by what a test uses: a fresh interpreter, a rendezvous port
SLOW_FIXTURES = {'subprocess_env', 'python', 'free_port'}


def pytest_configure(config) -> None:
    config.addinivalue_line('markers', 'slow: the integration tier (make test runs it, make test-fast does not)')
    _share_the_cores()


def _share_the_cores() -> None:
    """Under pytest-xdist (``make test`` runs one worker per core), each worker's torch takes its share of the
    cores: the suite's small tensors gain nothing from threads, and workers that each start every thread slow
    one another down."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    if workers > 1:
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        where = Path(str(item.fspath)).resolve().relative_to(REPO_ROOT).as_posix() + '::' + item.name
        if where.startswith(SLOW_PATHS) or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def pytest_report_header(config) -> List[str]:
    import mmcv
    import mmengine
    import torch

    from snl_mm.utils import mmseg_available
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


@pytest.fixture(scope='session', name='keys_under')
def keys_under_fixture():
    """:func:`tests.helpers.keys_under`."""
    return keys_under


@pytest.fixture(scope='session', name='randomise_norms_')
def randomise_norms_fixture():
    """:func:`tests.helpers.randomise_norms_`."""
    return randomise_norms_


@pytest.fixture
def config_from(tmp_path):
    """Write a config file (as a user edits one) and load it with ``Config.fromfile``."""
    from mmengine.config import Config
    counter = [0]

    def load(text: str):
        counter[0] += 1
        path = tmp_path / f'config_{counter[0]}.py'
        path.write_text(text)
        return Config.fromfile(str(path))

    return load


#: mmaction2's own I3D config, shipped inside the mmaction2 package.
I3D_CONFIG = 'mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py'


@pytest.fixture(scope='session')
def i3d_config():
    """mmaction2's shipped I3D ResNet-50 config, with its ImageNet URL removed (no network here)."""
    from mmengine.hub import get_config

    cfg = get_config(I3D_CONFIG)
    assert cfg.model.backbone.pretrained == 'torchvision://resnet50'
    cfg.model.backbone.pretrained = None
    return cfg
