"""Fixes for gaps in mmengine 0.10.7 (the release snl-mm runs on), one module per gap. Importing this package
applies them; applying twice changes nothing.

Why they are not applied by ``import snl_mm``: the package's blocks, backbones and insertion mechanism are a
library that other code imports (``from snl_mm.graph import Affinity`` in a notebook, ``SNLBlock`` in someone
else's model); importing a library of blocks must not change how a different library loads checkpoints, starts
distributed runs or wraps models. The fixes below do change mmengine, so they are opt-in, and applied where a
training run starts:

* by the package's tools (``tools/train.py``, ``tools/test.py``, ``dist_train.sh``, ``slurm_train.sh``, the
  analysis tools), which import :mod:`snl_mm.compat` first;
* by one line in a config, for the toolboxes' own launchers (mmpretrain's, mmaction2's ``tools/train.py``,
  ``mim train``); every config of the package carries it::

      custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

  mmengine imports ``custom_imports`` when it reads the config, in every process (torchrun and slurm workers
  too), before the Runner starts.

Each fix checks, when it is applied, whether the installed mmengine still has the gap (by its behaviour where a
cheap check exists), and leaves mmengine alone otherwise.

==========================  =================================================================================
module                      gap
==========================  =================================================================================
:mod:`.checkpoint`          mmengine 0.10.7 checkpoints under torch >= 2.6 ``weights_only`` (mmengine#1655)
:mod:`.dist`                mmengine 0.10.7 distributed start and DDP wrapper assume GPUs
:mod:`.installed_path`      mmengine 0.10.7 does not find editable installs (``pkg::`` configs, ``get_config``)
:mod:`.base_scope`          ``snl_mm::`` bases are tagged with the ``snl_mm`` scope, where their upstream types are not
:mod:`.mmseg_ops`           a segmentation config with mmcv-lite stops with mmcv's raw ``No module named 'mmcv._ext'``
:mod:`.atomic_save`         checkpoints and ``last_checkpoint`` written in place: a kill leaves partial files
:mod:`.resume`              auto-resume trusts ``last_checkpoint`` even when it is empty or names a bad file
:mod:`.exact_resume`        checkpoints lack the random states and the position within the epoch
:mod:`.checkpoint_errors`   a truncated, empty or foreign file gives torch's raw error (or its advice to
                            turn ``weights_only`` off) without naming the file
==========================  =================================================================================

``docs/troubleshooting.md`` describes each gap's symptom and fix for users.
"""
from typing import Dict

from . import (atomic_save, base_scope, checkpoint, checkpoint_errors, dist, exact_resume, installed_path, mmseg_ops,
               resume)


def apply_all() -> Dict[str, bool]:
    """Apply every fix; idempotent.

    Returns:
        dict: fix name -> whether it is in effect in this process (False where mmengine does not need it).
    """
    return dict(checkpoint=checkpoint.apply(), dist=dist.apply(), installed_path=installed_path.apply(),
                base_scope=base_scope.apply(), mmseg_ops=mmseg_ops.apply(),
                atomic_save=atomic_save.apply(), resume=resume.apply(), exact_resume=exact_resume.apply(),
                # after `checkpoint`: the clear errors wrap the loader with its weights-only fix
                checkpoint_errors=checkpoint_errors.apply())


#: what :func:`apply_all` reported when this package was imported.
APPLIED = apply_all()

__all__ = ['apply_all', 'APPLIED', 'atomic_save', 'base_scope', 'checkpoint', 'checkpoint_errors', 'dist',
           'exact_resume', 'installed_path', 'mmseg_ops', 'resume']
