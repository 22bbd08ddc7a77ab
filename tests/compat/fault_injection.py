"""Faults injected into a training process by the tests of crash-safe checkpoints and exact resume.

Imported by the training process through ``custom_imports`` (this folder is put on ``PYTHONPATH``); what it
does is set by environment variables, so one config serves the runs with and without a fault:

* ``SNL_TEST_KILL_BEFORE_ITER=k``: the :class:`KillBeforeIter` hook SIGKILLs its own process (every rank) when
  iteration ``k + 1`` is about to start (``runner.iter == k``): a hard kill mid-epoch, no clean-up.
* ``SNL_TEST_STALL_WRITE=NAME`` and ``SNL_TEST_MARKER=PATH``: the first fsync of a file whose name contains
  ``NAME`` (the temporary file of an atomic write of ``NAME``) creates ``PATH`` and then sleeps for a minute,
  holding the write open so that the test kills the process inside the write.
"""
import os
import signal
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

_fsync = os.fsync


def _stalling_fsync(fd: int) -> None:
    target = os.environ.get('SNL_TEST_STALL_WRITE')
    marker = os.environ.get('SNL_TEST_MARKER')
    try:
        name = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        name = ''
    if target and marker and target in os.path.basename(name) and not os.path.exists(marker):
        with open(marker, 'w') as f:
            f.write(name)
        time.sleep(60)
    _fsync(fd)


if os.environ.get('SNL_TEST_STALL_WRITE'):
    os.fsync = _stalling_fsync


@HOOKS.register_module()
class KillBeforeIter(Hook):
    """SIGKILL this process when ``runner.iter`` reaches ``SNL_TEST_KILL_BEFORE_ITER`` (if set)."""

    priority = 'HIGHEST'

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        kill_at = os.environ.get('SNL_TEST_KILL_BEFORE_ITER')
        if kill_at is not None and runner.iter == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
