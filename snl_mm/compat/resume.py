"""Auto-resume that survives a killed run: the newest checkpoint that loads, when ``last_checkpoint`` fails.

The gap, in mmengine 0.10.7 (no upstream issue): ``find_latest_checkpoint`` (``mmengine/runner/checkpoint.py``),
which ``Runner.load_or_resume`` calls for ``resume=True`` (``tools/train.py --resume``), returns whatever
``work_dir/last_checkpoint`` says. An empty ``last_checkpoint`` (a kill while mmengine rewrote it in place)
gives ``''`` and ``FileNotFoundError:  can not be found.``; a pointer to a deleted or half-written checkpoint
fails the same way or with a bare ``EOFError``/``OSError``, although complete checkpoints are on disk.

What snl_mm does: :func:`find_latest_checkpoint` replaces mmengine's (in ``mmengine.runner``,
``mmengine.runner.checkpoint``, ``mmengine.runner.runner`` and ``mmengine.runner._flexible_runner``). It takes
``last_checkpoint``'s file when that file loads as a Runner checkpoint. When ``last_checkpoint`` is missing,
empty, or names a file that does not load, it takes the newest (by modification time) file of the checkpoint
directory that loads completely and holds what ``Runner.resume`` needs (``meta`` with ``epoch`` and ``iter``,
``state_dict``, ``message_hub``, ``optimizer``), and logs which one it took and why. Where there is nothing to
resume (no ``last_checkpoint``, no checkpoint) it returns ``None`` as mmengine does (training starts from the
beginning); where a previous run left checkpoints but none loads, it stops with
:class:`NoReadableCheckpointError` listing each file and its reason. Temporary files of interrupted atomic
writes (:mod:`snl_mm.compat.atomic_save`) in that directory are removed by the main process.
"""
import functools
import logging
import os
import os.path as osp
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import mmengine.runner as mmengine_runner
import mmengine.runner.checkpoint as mmengine_checkpoint
import mmengine.runner.runner as mmengine_runner_module
from mmengine.dist import is_distributed, is_main_process
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from .atomic_save import TEMPORARY_NAME

#: what ``Runner.resume`` reads from a checkpoint.
RESUME_KEYS = ('meta', 'state_dict', 'message_hub', 'optimizer')

_mmengine_find_latest_checkpoint = mmengine_checkpoint.find_latest_checkpoint


class NoReadableCheckpointError(FileNotFoundError):
    """Auto-resume found checkpoints of a previous run, and none of them loads."""


@functools.lru_cache(maxsize=64)
def _check(path: str, mtime_ns: int, size: int) -> Optional[str]:
    """Why the file at ``path`` (of that modification time and size) cannot be resumed from; None if it can."""
    try:
        checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu', logger='silent')
    except Exception as err:  # what a file can make torch.load raise is open-ended; the reason is reported
        return f'{type(err).__name__}: {err}'.splitlines()[0]
    missing = [key for key in RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        return f'not a Runner checkpoint to resume from (no {", ".join(missing)})'
    meta = checkpoint['meta']
    if not all(isinstance(meta.get(key), int) for key in ('epoch', 'iter')):
        return 'not a Runner checkpoint to resume from (no epoch/iter in its meta)'
    return None


def resume_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from (missing, unreadable, not a Runner checkpoint), or None if it can.

    The file is loaded once per (path, modification time, size) in a process; later calls reuse the answer.
    """
    try:
        stat = os.stat(path)
    except OSError:
        return 'it does not exist'
    if stat.st_size == 0:
        return 'it is empty'
    return _check(osp.realpath(path), stat.st_mtime_ns, stat.st_size)


def _candidates(directory: str) -> List[str]:
    """The ``.pth`` files of ``directory``, newest first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    paths = [osp.join(directory, n) for n in names if n.endswith('.pth') and not n.startswith('.')]
    paths = [p for p in paths if osp.isfile(p)]
    return sorted(paths, key=lambda p: (os.stat(p).st_mtime_ns, p), reverse=True)


def _is_main_process() -> bool:
    """Rank 0, also before the process group starts (``tools/train.py`` looks for a checkpoint then)."""
    if is_distributed():
        return is_main_process()
    return int(os.environ.get('RANK', '0')) == 0


def _remove_leftovers(directory: str) -> None:
    """Remove the temporary files of interrupted atomic writes (main process only)."""
    if not _is_main_process():
        return
    for name in os.listdir(directory) if osp.isdir(directory) else []:
        if TEMPORARY_NAME.match(name):
            path = osp.join(directory, name)
            try:
                os.remove(path)
            except OSError:
                continue
            print_log(f'Removed {path}: the temporary file of a checkpoint write that was interrupted.',
                      logger='current', level=logging.WARNING)


def _read_pointer(pointer: str) -> Tuple[Optional[str], Optional[str]]:
    """``(the path last_checkpoint names or None, why it cannot be used or None)``."""
    if not osp.exists(pointer):
        return None, 'does not exist'
    with open(pointer) as f:
        named = f.read().strip()
    if not named:
        return None, 'is empty'
    problem = resume_problem(named)
    return named, None if problem is None else f'names {named}, which cannot be resumed from: {problem}'


def find_latest_checkpoint(path: str) -> Optional[str]:
    """The checkpoint auto-resume continues from, in the work directory ``path``.

    ``last_checkpoint``'s file when it can be resumed from; otherwise the newest checkpoint in the checkpoint
    directory (the directory ``last_checkpoint`` names, and the work directory) that can, with a warning
    saying which one and why. None when there is nothing to resume.

    Args:
        path (str): the work directory.

    Returns:
        str | None: the checkpoint's path.

    Raises:
        NoReadableCheckpointError: a previous run left checkpoints (or ``last_checkpoint``) and none of them
            can be resumed from.
    """
    pointer = osp.join(path, 'last_checkpoint')
    named, problem = _read_pointer(pointer)
    directories = list(dict.fromkeys(d for d in (osp.dirname(named) if named else None, path) if d))
    for directory in directories:
        _remove_leftovers(directory)
    if problem is None:
        return named

    rejected: Dict[str, str] = {}
    if named:
        rejected[named] = resume_problem(named) or ''
    for candidate in (c for d in directories for c in _candidates(d)):
        if osp.realpath(candidate) in {osp.realpath(r) for r in rejected}:
            continue
        reason = resume_problem(candidate)
        if reason is None:
            skipped = ''.join(f'\n  skipped {p}: {r}' for p, r in rejected.items() if p != named)
            print_log(f'Auto-resume: {pointer} {problem}. Resuming from {candidate}, the newest checkpoint in '
                      f'{osp.dirname(candidate)} that loads completely.{skipped}', logger='current',
                      level=logging.WARNING)
            return candidate
        rejected[candidate] = reason

    unreadable = [r for r in rejected.values() if not r.startswith('not a Runner checkpoint')]
    if not osp.exists(pointer) and not unreadable:
        print_log(f'Auto-resume: no last_checkpoint and no Runner checkpoint in {path}: training starts from '
                  'the beginning.', logger='current')
        return None
    listing = ''.join(f'\n  {p}: {r}' for p, r in rejected.items()) or '\n  (no .pth file)'
    raise NoReadableCheckpointError(
        f'Auto-resume: {pointer} {problem}, and no checkpoint in {", ".join(directories)} can be resumed '
        f'from:{listing}\nResume from a file you choose with `--resume PATH` (or `load_from=PATH, '
        'resume=True`), or remove these files to train from the beginning.')


def gap_present() -> bool:
    """Whether mmengine's ``find_latest_checkpoint`` returns an unusable answer for an empty ``last_checkpoint``
    (the gap), tried in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        open(osp.join(tmp, 'last_checkpoint'), 'w').close()
        found = _mmengine_find_latest_checkpoint(tmp)
    return found is not None and not osp.isfile(found)


#: the modules whose name ``find_latest_checkpoint`` is replaced.
_MODULES: List[Any] = [mmengine_runner, mmengine_checkpoint, mmengine_runner_module]


def is_applied() -> bool:
    """Whether :func:`apply` has replaced mmengine's ``find_latest_checkpoint``."""
    return mmengine_runner_module.find_latest_checkpoint is find_latest_checkpoint


def apply() -> bool:
    """Replace mmengine's ``find_latest_checkpoint`` where it has the gap. Safe to call any number of times.

    Returns:
        bool: True when auto-resume falls back to a readable checkpoint; False where mmengine needs no fix.
    """
    if is_applied():
        return True
    if not gap_present():
        return False
    import mmengine.runner._flexible_runner as flexible_runner
    for module in _MODULES + [flexible_runner]:
        module.find_latest_checkpoint = find_latest_checkpoint
    return True


__all__ = ['find_latest_checkpoint', 'resume_problem', 'NoReadableCheckpointError', 'apply', 'is_applied',
           'gap_present']
