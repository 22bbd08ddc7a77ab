"""Every change snl-mm makes to the code of other packages, in one table.

Each row names the module that makes the change; every such module has ``apply() -> bool`` (idempotent: applying
twice changes nothing; False where the installed release does not have the gap, which it checks by the release's
behaviour where a cheap check exists) and ``is_applied() -> bool``. Two groups apply them:

* ``import snl_mm`` applies the rows it needs to do its job and that change nothing for a config without
  ``plugins``: the model registries' build function, and the modules mmaction2's wheel lacks;
* ``import snl_mm.compat`` (opt-in: the package's tools and configs import it) applies the fixes of mmengine's gaps.
  A library of blocks must not change, merely by being imported, how another library loads checkpoints, starts
  distributed runs or resumes; the fixes do, so a run opts in (``custom_imports=dict(imports=['snl_mm',
  'snl_mm.compat'])``; mmengine imports it in every process, torchrun and slurm workers too).

``docs/troubleshooting.md`` describes each gap's symptom and fix for users; :func:`applied` tells which rows are
in effect in this process.
"""
import importlib
import sys
from typing import Dict, NamedTuple

#: the two groups: the module whose import applies the row
SNL_MM, COMPAT = 'snl_mm', 'snl_mm.compat'


class Patch(NamedTuple):
    """One change to another package: ``module`` makes it (``apply``/``is_applied``), ``changes`` says what of
    upstream it changes, ``gap`` why, ``group`` which import applies it."""
    name: str
    module: str
    changes: str
    gap: str
    group: str


PATCHES = (
    Patch('plugins', 'snl_mm.plugins.build', "the build function of mmengine's model registries (root and children)",
          'plugins= on any backbone config, handed to the package where the class has no such argument', SNL_MM),
    Patch('mmaction_drn', 'snl_mm.patches.mmaction_drn', "sys.modules['mmaction.models.localizers.drn'], a stand-in",
          "mmaction2 1.2.0's wheel lacks the module: `import mmaction.models` fails (mmaction2#2714)", SNL_MM),
    Patch('checkpoint', 'snl_mm.compat.checkpoint', 'CheckpointLoader.load_checkpoint (one wrapper, shared)',
          "mmengine's own checkpoints fail to load under torch >= 2.6 weights_only (mmengine#1655)", COMPAT),
    Patch('dist', 'snl_mm.compat.dist', 'mmengine.dist.utils._init_dist_pytorch/_init_dist_slurm, '
          'MMDistributedDataParallel.__init__', 'distributed starts and DDP assume GPUs', COMPAT),
    Patch('installed_path', 'snl_mm.compat.installed_path', 'get_installed_path (package_utils, utils, config, hub)',
          'editable installs are not found (pkg:: configs)', COMPAT),
    Patch('base_scope', 'snl_mm.compat.base_scope', 'Config._get_cfg_path',
          'snl_mm:: bases are tagged with the snl_mm scope, where their upstream types are not', COMPAT),
    Patch('mmseg_ops', 'snl_mm.compat.mmseg_ops', 'Registry.import_from_location',
          "a segmentation config with mmcv-lite stops with mmcv's raw `No module named 'mmcv._ext'`", COMPAT),
    Patch('atomic_save', 'snl_mm.compat.atomic_save', 'LocalBackend.put/put_text, the checkpoint hook module\'s '
          'open, CheckpointHook saves (one wrapper, shared)', 'a kill while saving leaves partial files', COMPAT),
    Patch('resume', 'snl_mm.compat.resume', 'find_latest_checkpoint (runner, checkpoint, runner modules)',
          'auto-resume trusts an empty or broken last_checkpoint', COMPAT),
    Patch('exact_resume', 'snl_mm.compat.exact_resume', 'Runner.train/resume, EpochBasedTrainLoop.run_epoch, '
          'ValLoop.run, CheckpointHook saves (shared wrapper)',
          'checkpoints lack the random states and the position within the epoch', COMPAT),
    Patch('checkpoint_errors', 'snl_mm.compat.checkpoint_errors', 'CheckpointLoader.load_checkpoint (shared wrapper)',
          'a truncated, empty or foreign file gives torch\'s raw error, without the file', COMPAT),
)


def apply(group: str) -> Dict[str, bool]:
    """Apply the rows of ``group`` in the table's order; ``{name: in effect}``."""
    return {p.name: importlib.import_module(p.module).apply() for p in PATCHES if p.group == group}


def applied() -> Dict[str, bool]:
    """``{name: in effect in this process}`` for every row (a row whose module was never imported is not)."""
    return {p.name: p.module in sys.modules and sys.modules[p.module].is_applied() for p in PATCHES}
