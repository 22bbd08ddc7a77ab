"""Training a segmentation config with mmcv-lite stops with the one error naming tools/build_mmcv.sh.

Each run is a child process in which ``mmcv._ext`` cannot be imported, exactly what mmcv-lite lacks (as
``tests/utils/test_optional.py`` does), launched by the package's ``tools/train.py`` and by mmsegmentation's own
``tools/train.py``: the config loads, and building its Runner raises the clear ``ImportError`` instead of mmcv's
raw ``No module named 'mmcv._ext'``.
"""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MESSAGE = ("ImportError: A segmentation config (default_scope='mmseg', mmsegmentation's visualizer registry) "
           'needs mmsegmentation, which needs a compiled mmcv (mmcv.ops); install it with tools/build_mmcv.sh')

#: runs a script as __main__ with mmcv._ext made unimportable
HIDE_EXT = '''
import runpy, sys
class HideCompiledOps:
    def find_spec(self, name, path=None, target=None):
        if name == 'mmcv._ext':
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, HideCompiledOps())
sys.argv = sys.argv[1:]
{check_load}
runpy.run_path(sys.argv[0], run_name='__main__')
'''
#: the config itself loads with mmcv-lite (its custom_imports included)
CHECK_LOAD = '''
from mmengine.config import Config
Config.fromfile(sys.argv[1])
print('config loaded')
'''


def _mmseg_train_script() -> str:
    from mmengine.utils import get_installed_path
    return str(Path(get_installed_path('mmsegmentation')) / '.mim' / 'tools' / 'train.py')


@pytest.mark.parametrize('launcher,config', [
    ('snl_mm', 'snl_r50-d8_4xb2-40k_cityscapes-512x1024.py'),
    ('mmseg', 'fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'),
])
def test_training_with_mmcv_lite_names_build_mmcv(launcher, config, subprocess_env, tmp_path):
    pytest.importorskip('mmseg')
    script = str(REPO / 'tools' / 'train.py') if launcher == 'snl_mm' else _mmseg_train_script()
    code = HIDE_EXT.format(check_load=CHECK_LOAD)
    proc = subprocess.run(
        [sys.executable, '-c', code, script, str(REPO / 'configs' / 'cityscapes' / config), '--work-dir',
         str(tmp_path)], cwd=str(REPO), env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert 'config loaded' in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == MESSAGE, proc.stderr[-3000:]
    # the raw error is kept as the cause, above the clear one
    assert "No module named 'mmcv._ext'" in proc.stderr
