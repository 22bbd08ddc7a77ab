"""The core needs torch, mmengine and mmcv-lite only: a Python that cannot import mmpretrain, mmaction2,
mmsegmentation, mmdetection or mmcv's compiled ops imports snl_mm, builds and runs all six blocks, builds them as mmcv
plugin layers, and says which extra to install when a backbone of a missing toolbox is asked for."""
import subprocess
import sys

CODE = r'''
import sys
HIDDEN = ('mmpretrain', 'mmaction', 'mmseg', 'mmdet', 'mmcv._ext')

class Hide:
    """Behaves as if the packages were not installed (as in a venv with torch, mmengine and mmcv-lite)."""
    def find_spec(self, name, path=None, target=None):
        if name in HIDDEN or name.startswith(tuple(h + '.' for h in HIDDEN)):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)

sys.meta_path.insert(0, Hide())
import torch
import snl_mm
from mmcv.cnn import build_plugin_layer
from snl_mm.blocks import BLOCK_NAMES
from snl_mm.registry import MODELS, ROOT_MODELS

assert snl_mm.backbones.LOADED == ['mmdet'], snl_mm.backbones.LOADED  # the mmdet/mmseg checks need neither
for name in BLOCK_NAMES:
    block = ROOT_MODELS.build(dict(type=name, in_channels=16))
    x = torch.randn(2, 16, 5, 6)
    assert block(x).shape == x.shape
name, layer = build_plugin_layer(dict(type='SNLBlock'), in_channels=64)
assert name == 'snl_block' and layer(torch.randn(1, 64, 4, 4)).shape == (1, 64, 4, 4)
model = MODELS.build(dict(type='snl_mm.PreResNet', depth=20, plugins=[dict(cfg=dict(type='SNLBlock'), blocks=(1, ))]))
assert len(model.plugin_paths) == 3
for module in ('mmpretrain', 'mmaction', 'mmseg', 'mmdet'):
    assert module not in sys.modules, module
try:
    MODELS.build(dict(type='snl_mm.ResNet3d', depth=50))
except ImportError as err:
    print(err)
'''


def test_core_without_the_toolboxes(subprocess_env):
    proc = subprocess.run([sys.executable, '-c', CODE], env=subprocess_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == \
        "snl_mm.ResNet3d needs mmaction2, which is not installed: pip install 'snl-mm[video]'"
