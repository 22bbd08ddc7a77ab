"""Fixes for gaps in the OpenMMLab releases snl_mm runs on, one module per gap.

Importing this package (``import snl_mm`` does it first) applies every fix, in every process that imports
it, torchrun workers included; applying twice changes nothing.

=====================  =================================================================================
module                 gap
=====================  =================================================================================
:mod:`.versions`       unsupported mmcv / mmengine / torch stop here with the supported ranges
:mod:`.mmaction_drn`   mmaction2 1.2.0 wheel lacks ``mmaction.models.localizers.drn`` (mmaction2#2714)
:mod:`.checkpoint`     mmengine 0.10.7 checkpoints under torch >= 2.6 ``weights_only`` (mmengine#1655)
:mod:`.dist`           mmengine 0.10.7 distributed start and DDP wrapper assume GPUs
:mod:`.mmseg`          mmsegmentation's models need compiled ``mmcv.ops`` and ftfy (mmsegmentation#871, #3704)
=====================  =================================================================================

``docs/troubleshooting.md`` describes each gap's symptom and fix for users.
"""
from typing import Dict

from . import versions

# The version guard runs before anything imports mmaction2 or mmsegmentation, whose own mmcv asserts would
# otherwise fire first with a less helpful message.
versions.check_versions()

from . import checkpoint, dist, mmaction_drn  # noqa: E402
from .mmseg import mmseg_available, require_mmseg  # noqa: E402


def apply_all() -> Dict[str, bool]:
    """Apply every fix; idempotent.

    Returns:
        dict: fix name -> whether it is in effect in this process (the ``drn`` placeholder is only
        installed when mmaction2 lacks the real package; the checkpoint fix only on torch >= 2.5).
    """
    return dict(
        mmaction_drn=mmaction_drn.apply(),
        checkpoint=checkpoint.apply(),
        dist=dist.apply(),
    )


#: what :func:`apply_all` reported when this package was imported.
APPLIED = apply_all()

__all__ = ['apply_all', 'APPLIED', 'mmseg_available', 'require_mmseg', 'versions', 'checkpoint', 'dist',
           'mmaction_drn']
