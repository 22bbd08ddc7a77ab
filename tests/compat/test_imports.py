"""Importing the package and its fixes: ``import snl_mm`` registers and changes nothing in mmengine;
``import snl_mm.compat`` applies the fixes, once; either makes the whole OpenMMLab stack importable."""
import subprocess
import sys

import snl_mm


def _run(code: str, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)


def test_import_snl_mm_then_openmmlab_models(subprocess_env) -> None:
    code = ('import snl_mm, mmpretrain.models, mmaction.models\n'
            'import snl_mm.compat\n'
            'print(snl_mm.__version__, snl_mm.compat.APPLIED)\n')
    proc = _run(code, subprocess_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith(snl_mm.__version__)


def test_import_snl_mm_changes_nothing_in_mmengine(subprocess_env) -> None:
    """The checkpoint loader, the distributed start and the DDP wrapper are mmengine's own until
    ``snl_mm.compat`` is imported."""
    code = ('import snl_mm\n'
            'from mmengine.runner.checkpoint import CheckpointLoader\n'
            'import mmengine.dist.utils as du\n'
            'from mmengine.model import MMDistributedDataParallel as DDP\n'
            'patched = lambda: [getattr(f, "__snl_mm_patched__", False) for f in (\n'
            '    CheckpointLoader.load_checkpoint, du._init_dist_pytorch, DDP.__init__)]\n'
            'print(patched())\n'
            'import snl_mm.compat\n'
            'print(patched())\n')
    proc = _run(code, subprocess_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-2:] == ['[False, False, False]', '[True, True, True]']


def test_custom_imports_in_a_config(subprocess_env, tmp_path) -> None:
    """``custom_imports=['snl_mm']`` in a config makes mmaction's models importable (its missing module filled)."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("custom_imports = dict(imports=['snl_mm'], allow_failed_imports=False)\n"
                   "model = dict(type='Recognizer2D', backbone=dict(type='ResNet', depth=18, pretrained=None),\n"
                   "             cls_head=dict(type='TSNHead', num_classes=3, in_channels=512))\n")
    code = (f'from mmengine.config import Config\n'
            f'cfg = Config.fromfile({str(cfg)!r})\n'
            'from mmengine.registry import init_default_scope\n'
            "init_default_scope('mmaction')\n"
            'from mmaction.registry import MODELS\n'
            "print(type(MODELS.build(cfg.model)).__name__)\n")
    proc = _run(code, subprocess_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == 'Recognizer2D'


def test_apply_all_idempotent() -> None:
    import snl_mm.compat
    first = dict(snl_mm.compat.APPLIED)
    assert snl_mm.compat.apply_all() == first
    assert snl_mm.compat.apply_all() == first
    assert first['checkpoint'] and first['dist']
