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
            'print(patched())\n'
            'print(snl_mm.compat.APPLIED["dist"])\n')
    proc = _run(code, subprocess_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    before, after, dist = proc.stdout.strip().splitlines()[-3:]
    assert before == '[False, False, False]'
    assert after == f'[True, {dist}, {dist}]'  # the distributed fix only where mmengine's start fails (no GPU)


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
    assert first == {n: v for n, v in snl_mm.patches.applied().items() if n in first} and first["checkpoint"]


def test_every_change_is_a_row_of_one_table_applied_once() -> None:
    """Every change to another package is a row of ``snl_mm.patches.PATCHES``; each row's module applies it and
    says whether it is in effect; applying again wraps nothing twice."""
    import importlib

    from mmengine.fileio.backends.local_backend import LocalBackend
    from mmengine.hooks import CheckpointHook
    from mmengine.registry import MODELS
    from mmengine.runner import EpochBasedTrainLoop, Runner
    from mmengine.runner.checkpoint import CheckpointLoader

    import snl_mm.compat
    from snl_mm import patches
    from snl_mm.patches import mmaction_drn

    for row in patches.PATCHES:
        module = importlib.import_module(row.module)
        assert callable(module.apply) and callable(module.is_applied), row.name
    assert patches.applied() == dict(plugins=True, mmaction_drn=mmaction_drn.drn_missing(), **snl_mm.compat.APPLIED)

    def wrapped():
        return [CheckpointLoader.__dict__['load_checkpoint'], CheckpointHook._save_checkpoint_with_step,
                CheckpointHook._save_best_checkpoint, LocalBackend.put, Runner.resume, Runner.train,
                EpochBasedTrainLoop.run_epoch, MODELS.build_func]

    before = wrapped()
    assert snl_mm.compat.apply_all() == snl_mm.compat.APPLIED and patches.apply(patches.SNL_MM)['plugins']
    assert all(a is b for a, b in zip(before, wrapped()))
    # two fixes on one upstream function share one wrapper
    contexts = CheckpointHook._save_checkpoint_with_step.__snl_mm_around__
    assert set(contexts) == {'snl_mm.compat.atomic_save', 'snl_mm.compat.exact_resume'}
    assert set(CheckpointLoader.load_checkpoint.__func__.__snl_mm_around__) == {
        'snl_mm.compat.checkpoint', 'snl_mm.compat.checkpoint_errors'}
    assert getattr(CheckpointLoader.load_checkpoint.__func__, '__wrapped__').__module__ == 'mmengine.runner.checkpoint'
