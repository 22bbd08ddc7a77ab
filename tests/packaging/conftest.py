"""A wheel built from the checkout, installed into a fresh venv that sees the pinned stack but not the checkout.

The venv (``python -m venv --without-pip``) gets the wheel first (pip driven from the test interpreter with
``--python``, so nothing else is visible while it installs), then one ``.pth`` line: a directory of links to
every entry of the test interpreter's site-packages except the editable install of snl-mm (its ``.pth``
files, import hook and metadata). The venv thus imports torch, mmengine, mmcv, mmpretrain, mim... as
installed, and snl_mm only from the wheel; a child run from a temporary directory without ``PYTHONPATH``
cannot see the checkout.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
#: what a wheel is built from (everything else of the checkout stays out of the copy)
SOURCES = ('snl_mm', 'configs', 'tools', 'model-index.yml', 'setup.cfg', 'setup.py', 'pyproject.toml', 'MANIFEST.in',
           'README.md', 'LICENSE', 'requirements')
IGNORED = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')


@dataclass
class WheelVenv:
    """A venv with the wheel of the checkout installed."""
    root: Path
    wheel: Path
    site: Path

    @property
    def python(self) -> str:
        return str(self.root / 'bin' / 'python')

    def env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
        env.update(OMP_NUM_THREADS='1', PYTHONNOUSERSITE='1', MPLBACKEND='Agg')
        return env

    def run(self, args: List[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, *args], cwd=str(cwd), env=self.env(), capture_output=True, text=True,
                              timeout=timeout)


def _editable_entry(name: str) -> bool:
    """Entries of site-packages that belong to the editable install of snl-mm."""
    return name.startswith(('__editable__', 'snl_mm', 'snl-mm')) or name == 'snl_mm.egg-link'


def stack_without_checkout(target: Path) -> Path:
    """A directory of links to the test interpreter's site-packages entries, the editable snl-mm left out."""
    target.mkdir()
    site = Path(sysconfig.get_paths()['purelib'])
    for entry in site.iterdir():
        if not _editable_entry(entry.name) and not entry.name.endswith('.pth'):
            (target / entry.name).symlink_to(entry)
    return target


def build_wheel(work: Path) -> Path:
    """``pip wheel . --no-deps`` on a copy of the checkout's packaging sources (pip builds in the tree)."""
    src = work / 'src'
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=IGNORED)
        elif path.exists():
            shutil.copy2(path, src / name)
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '.', '--no-deps', '-w', str(work / 'dist')],
                          cwd=str(src), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel, ) = (work / 'dist').glob('snl_mm-*.whl')
    return wheel


@pytest.fixture(scope='session')
def wheel_venv(tmp_path_factory) -> WheelVenv:
    work = tmp_path_factory.mktemp('wheel')
    wheel = build_wheel(work)
    root = work / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(root)], check=True, timeout=120)
    python = str(root / 'bin' / 'python')
    proc = subprocess.run([sys.executable, '-m', 'pip', '--python', python, 'install', '-q', '--no-deps',
                           '--no-index', str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    site = Path(subprocess.check_output([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                        text=True).strip())
    (site / 'pinned_stack.pth').write_text(str(stack_without_checkout(work / 'stack')) + '\n')
    return WheelVenv(root=root, wheel=wheel, site=site)
