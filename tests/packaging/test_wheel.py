"""The wheel built from the checkout, in a fresh venv beside the pinned stack: its ``.mim`` folder, ``snl_mm::``
configs, and ``mim train`` / ``mim test`` on the demo config (see ``conftest.py`` for the venv)."""
import zipfile
from pathlib import Path

from tests.packaging.conftest import REPO

DEMO = 'demo/preresnet20-snl_relation.py'
#: a couple of iterations: 64 generated images in batches of 32, 50 for validation and test
SMALL = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.dataset.num_samples=64',
         'val_dataloader.dataset.num_samples=50', 'test_dataloader.dataset.num_samples=50',
         'default_hooks.logger.interval=1']


def _ok(proc) -> str:
    """The standard output of a child that succeeded."""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_wheel_holds_configs_tools_and_model_index(wheel_venv):
    names = set(zipfile.ZipFile(wheel_venv.wheel).namelist())
    shipped = [p for p in (REPO / 'configs').rglob('*') if p.suffix in ('.py', '.yml', '.md') and
               '__pycache__' not in p.parts]
    missing = [str(p.relative_to(REPO)) for p in shipped
               if f'snl_mm/.mim/configs/{p.relative_to(REPO / "configs")}' not in names]
    assert not missing, f'not in the wheel: {missing}'
    for tool in ('train.py', 'test.py', 'dist_train.sh', 'dist_test.sh', 'build_mmcv.sh',
                 'analysis/get_flops.py'):
        assert f'snl_mm/.mim/tools/{tool}' in names
    assert 'snl_mm/.mim/model-index.yml' in names
    # copies of the files, not the checkout's links
    with zipfile.ZipFile(wheel_venv.wheel) as whl:
        assert whl.read(f'snl_mm/.mim/configs/{DEMO}') == (REPO / 'configs' / DEMO).read_bytes()


def test_the_venv_imports_the_wheel_not_the_checkout(wheel_venv, tmp_path):
    out = _ok(wheel_venv.run(['-c', 'import mmcv, mmpretrain, mim, snl_mm\n'
                                    'from snl_mm.config_scope import mim_dir\n'
                                    'print(snl_mm.__file__); print(mim_dir())'], tmp_path))
    package, mim = out.strip().splitlines()[-2:]
    assert package == str(wheel_venv.site / 'snl_mm' / '__init__.py')
    assert Path(mim, 'configs', DEMO).is_file() and not Path(mim, 'configs').is_symlink()


def test_mim_train_and_test_the_demo(wheel_venv, tmp_path):
    work = tmp_path / 'work'
    out = _ok(wheel_venv.run(['-m', 'mim', 'train', 'snl_mm', Path(DEMO).name, '--work-dir', str(work), *SMALL],
                             tmp_path))
    # mim found the config and the training script in the installed package
    assert str(wheel_venv.site / 'snl_mm' / '.mim' / 'configs' / DEMO) in out
    assert str(wheel_venv.site / 'snl_mm' / '.mim' / 'tools' / 'train.py') in out
    assert 'Epoch(train) [1][2/2]' in out
    checkpoint = work / 'epoch_1.pth'
    assert checkpoint.is_file()

    out = _ok(wheel_venv.run(['-m', 'mim', 'test', 'snl_mm', Path(DEMO).name, '--checkpoint', str(checkpoint),
                              '--work-dir', str(tmp_path / 'test'), *SMALL[:1], SMALL[4]], tmp_path))
    assert str(wheel_venv.site / 'snl_mm' / '.mim' / 'tools' / 'test.py') in out
    assert 'Epoch(test) [1/1]' in out and 'accuracy/top1' in out


USER_CONFIG = """\
_base_ = 'snl_mm::demo/preresnet20-snl_relation.py'
model = dict(backbone=dict(plugins=[
    dict(cfg=dict(type='NLBlock', reduction=2), stages=(True, ), position='after_block', blocks=(1, ))]))
"""

BUILD = """\
import snl_mm.compat  # snl_mm:: known to mmengine, and its bases built in the scopes they declare
import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import MODELS, init_default_scope

from snl_mm.blocks import find_blocks

cfg = Config.fromfile('user_config.py')
print([line for line in cfg.text.splitlines() if line.endswith('preresnet20_relation.py')][0])
init_default_scope(cfg.default_scope)
model = MODELS.build(cfg.model).eval()
blocks = {path: type(block).__name__ for path, block in find_blocks(model).items()}
print(blocks, tuple(model(torch.randn(2, 3, 32, 32)).shape))
listed = get_config('snl_mm::imagenet/resnet50-snl_8xb32-110e_in1k.py')  # a model of configs/imagenet/metafile.yml
print(listed.filename)
"""


def test_a_user_config_inherits_from_snl_mm(wheel_venv, tmp_path):
    (tmp_path / 'user_config.py').write_text(USER_CONFIG)
    (tmp_path / 'build.py').write_text(BUILD)
    base, built, listed = _ok(wheel_venv.run(['build.py'], tmp_path)).strip().splitlines()[-3:]
    mim = wheel_venv.site / 'snl_mm' / '.mim' / 'configs'
    assert base == str(mim / 'demo' / 'preresnet20_relation.py')  # the demo's own base, from the wheel
    assert built.endswith("NLBlock'} (2, 2)") and built.count('Block') == 1
    assert listed == str(mim / 'imagenet' / 'resnet50-snl_8xb32-110e_in1k.py')
