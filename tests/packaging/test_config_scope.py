"""``snl_mm::`` as a config scope in this (editable) install: ``_base_``, ``Config.fromfile``, ``get_config``."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.hub import get_config
from mmengine.registry import MODELS, init_default_scope

import snl_mm.compat  # noqa: F401  (what the package's tools import first)
from snl_mm.blocks import find_blocks
from snl_mm.compat import installed_path
from snl_mm.config_scope import mim_dir
from tests.packaging.conftest import REPO

DEMO = 'demo/preresnet20-snl_relation.py'
USER_CONFIG = """\
_base_ = 'snl_mm::demo/preresnet20-snl_relation.py'
model = dict(backbone=dict(plugins=[
    dict(cfg=dict(type='NLBlock', reduction=2), stages=(True, ), position='after_block', blocks=(1, ))]))
"""


def test_scope_and_mim_folder():
    assert MODULE2PACKAGE['snl_mm'] == 'snl-mm'
    mim = mim_dir()
    for name in (f'configs/{DEMO}', 'tools/train.py', 'tools/test.py', 'model-index.yml'):
        assert osp.isfile(osp.join(mim, name)), name
    # in a checkout the folder links to the files being edited
    assert osp.samefile(osp.join(mim, 'configs', DEMO), REPO / 'configs' / DEMO)


def test_a_user_config_inherits_and_builds(config_from):
    cfg = config_from(USER_CONFIG)
    assert osp.join(mim_dir(), 'configs', 'demo', 'preresnet20_relation.py') in cfg.text.splitlines()
    # the package's dicts keep their own scopes; those of its mmpretrain:: base keep mmpretrain's
    assert '_scope_' not in cfg.model and cfg.default_hooks.timer._scope_ == 'mmpretrain'
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model).eval()
    assert [type(b).__name__ for b in find_blocks(model).values()] == ['NLBlock']
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)


def test_get_config_by_metafile_and_by_path():
    listed = 'imagenet/resnet50-snl_8xb32-110e_in1k.py'  # a model of configs/imagenet/metafile.yml
    for path in (listed, DEMO, 'cifar/ablation/preresnet56-snl-r4_8xb16-300e_cifar100.py'):
        cfg = get_config(f'snl_mm::{path}')
        assert cfg.filename == osp.join(mim_dir(), 'configs', path)
        assert cfg.model == Config.fromfile(str(REPO / 'configs' / path)).model


def test_unknown_scope_still_refused(config_from):
    with pytest.raises(AssertionError, match='mmengine does not support to load nosuchpkg config'):
        config_from("_base_ = 'nosuchpkg::demo/x.py'\n")


def test_editable_install_is_found():
    """mmengine's own answer names site-packages/snl_mm, which an editable install does not have; the fixed one
    is where ``import snl_mm`` finds the package. Regular installs keep mmengine's answer."""
    from mmengine.utils import get_installed_path
    upstream = getattr(get_installed_path, '__wrapped__', get_installed_path)
    assert get_installed_path('snl-mm') == osp.dirname(snl_mm.__file__)
    if not osp.isdir(upstream('snl-mm')):  # this is an editable install: the gap is there
        assert not osp.exists(osp.join(upstream('snl-mm'), '.mim'))
    assert get_installed_path('mmpretrain') == upstream('mmpretrain')
    assert installed_path.is_applied() == (not osp.isdir(upstream('snl-mm')))  # applied only where the gap is


def test_without_the_fix_a_snl_mm_base_does_not_build(subprocess_env, tmp_path):
    """What :mod:`snl_mm.compat.base_scope` fixes: with mmengine's own base reading the config loads, its model
    is looked up in the ``snl_mm`` registry and is not found there."""
    (tmp_path / 'user.py').write_text(USER_CONFIG)
    code = ('import snl_mm.compat\n'
            'from mmengine.config import Config\n'
            'Config._get_cfg_path = staticmethod(Config._get_cfg_path.__wrapped__)  # mmengine\'s own\n'
            'from mmengine.registry import MODELS, init_default_scope\n'
            f'cfg = Config.fromfile({str(tmp_path / "user.py")!r})\n'
            "init_default_scope('mmpretrain')\n"
            'MODELS.build(cfg.model)\n')
    proc = subprocess.run([sys.executable, '-c', code], env=subprocess_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert 'ImageClassifier is not in the snl_mm::model registry' in proc.stderr
