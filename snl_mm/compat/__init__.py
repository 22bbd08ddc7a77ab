"""Fixes for gaps in mmengine 0.10.7 (the release snl-mm runs on), one module per gap. Importing this package
applies them; applying twice changes nothing.

Every change snl-mm makes to another package's code is a row of one table, :data:`snl_mm.patches.PATCHES`:
the rows of this package (group ``snl_mm.compat``) and the two ``import snl_mm`` applies. Each module below has
``apply()``, ``is_applied()`` and a check that the installed release still has the gap (by its behaviour where a
cheap check exists: a load, a write, a start tried on a temporary file or with a stop in place; by the source of
``CheckpointHook`` and ``Runner.save_checkpoint`` where observing the gap takes a training run), and leaves the
release alone where it does not. Fixes that change the same upstream function add a context manager to one
wrapper of it (:mod:`.around`), never a second wrapper.

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
:mod:`.exact_resume`        checkpoints lack the random states and the position within the epoch (a Runner that
                            trains gets one more hook, ``ExactResumeHook``, when ``train()`` starts)
:mod:`.checkpoint_errors`   a truncated, empty or foreign file gives torch's raw error (or its advice to
                            turn ``weights_only`` off) without naming the file
==========================  =================================================================================

``docs/troubleshooting.md`` describes each gap's symptom and fix for users.
"""
from typing import Dict

from snl_mm import patches


def apply_all() -> Dict[str, bool]:
    """Apply every fix of this package, in the order of :data:`snl_mm.patches.PATCHES`; idempotent.

    Returns:
        dict: fix name -> whether it is in effect in this process (False where mmengine does not need it).
    """
    return patches.apply(patches.COMPAT)


#: what :func:`apply_all` reported when this package was imported.
APPLIED = apply_all()

__all__ = ['apply_all', 'APPLIED']
