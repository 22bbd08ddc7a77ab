"""tools/build_mmcv.sh fetches through pip with the user's pip configuration, and reuses its cached wheel.

A full compilation takes more than ten minutes and is not run here; the cache in ``~/.cache/snl_mm`` is never
touched by a test that needs it empty (``SNL_MM_CACHE`` points to a temporary directory instead).
"""
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.packaging.conftest import REPO

SCRIPT = str(REPO / 'tools' / 'build_mmcv.sh')
UNREACHABLE = 'http://127.0.0.1:9/simple'  # the discard port: connections are refused at once


def _run(env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', SCRIPT, sys.executable], cwd=str(REPO), env=env, capture_output=True, text=True,
                          timeout=timeout)


def _compiled_mmcv() -> bool:
    try:
        import mmcv.ops  # noqa: F401
    except ImportError:
        return False
    return True


def test_an_unreachable_index_fails_with_pips_error(tmp_path):
    config = tmp_path / 'pip.conf'
    config.write_text(f'[global]\nindex-url = {UNREACHABLE}\nretries = 0\ntimeout = 2\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}
    env.update(PIP_CONFIG_FILE=str(config), PIP_INDEX_URL=UNREACHABLE, SNL_MM_CACHE=str(tmp_path / 'cache'))
    setuptools = importlib.metadata.version('setuptools')
    proc = _run(env)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    # pip's own report, for the index the configuration names
    assert f'Looking in indexes: {UNREACHABLE}' in out, out[-3000:]
    assert 'ERROR: Could not find a version that satisfies the requirement' in out, out[-3000:]
    assert "[build_mmcv] error: pip could not" in proc.stderr
    assert not list((tmp_path / 'cache').rglob('*.whl'))
    # the user's environment received nothing (no setuptools < 81 in it)
    assert importlib.metadata.version('setuptools') == setuptools


def test_the_cached_wheel_is_reused():
    cache = Path(os.environ.get('SNL_MM_CACHE', Path.home() / '.cache' / 'snl_mm'))
    key = f'mmcv-2.1.0_torch-{torch.__version__.split("+")[0]}_cpu_py{sys.version_info[0]}{sys.version_info[1]}'
    if not list((cache / 'wheels' / key).glob('mmcv-*.whl')) or torch.cuda.is_available():
        pytest.skip(f'no cached CPU wheel {cache}/wheels/{key}: tools/build_mmcv.sh (make test) builds it')
    if not _compiled_mmcv():
        pytest.skip('mmcv-lite is installed: reusing the cache would install the compiled mmcv into this venv')
    proc = _run(dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'reusing cached wheel {cache}/wheels/{key}/' in proc.stdout
    assert 'compiled mmcv already installed' in proc.stdout
    assert 'build environment' not in proc.stdout and 'compiling' not in proc.stdout
