"""Crash-safe checkpoints: every checkpoint file and ``last_checkpoint`` written atomically, old checkpoints
removed only once the new one is on disk.

The gap, in mmengine 0.10.7 (no upstream issue):

* ``LocalBackend.put`` / ``put_text`` (``mmengine/fileio/backends/local_backend.py``), through which
  ``mmengine.runner.save_checkpoint`` writes every ``.pth``, open the final path with ``'wb'`` and write into
  it. A process killed during the write leaves a truncated file (0 B, 8 KiB, 128 KiB...) under the
  checkpoint's own name.
* ``CheckpointHook._save_checkpoint_with_step`` (``mmengine/hooks/checkpoint_hook.py``) rewrites
  ``work_dir/last_checkpoint`` in place with ``open(save_file, 'w')``: a kill between the truncation and the
  write leaves it empty, and auto-resume then stops with ``FileNotFoundError:  can not be found.``
* the same method removes the oldest checkpoint (``max_keep_ckpts``) *before* writing the new one, and
  ``_save_best_checkpoint`` removes the previous best before writing the next: with ``max_keep_ckpts=1`` a
  kill during the write leaves no complete checkpoint at all.

What snl_mm does:

* :func:`write_atomic` writes to a temporary file in the same directory (``.NAME.PID.RANDOM.tmp``), flushes
  and fsyncs it, then renames it over the final name (``os.replace``, atomic on POSIX and Windows) and fsyncs
  the directory: a reader (or a resumed run) sees the old file or the new one, never a part. It serves
  ``LocalBackend.put`` and ``put_text``, and every file the checkpoint hook opens for writing (the
  module-level ``open`` of ``mmengine.hooks.checkpoint_hook`` is :func:`open_atomic` for write modes).
* the checkpoint hook's removals of old checkpoints wait until the new checkpoint and ``last_checkpoint``
  are written (:func:`removals_after_save`); if the save fails, the old checkpoints stay.

A temporary file left by a killed write never carries a checkpoint's name; auto-resume
(:mod:`snl_mm.compat.resume`) removes such leftovers from the checkpoint directory.
"""
import contextlib
import inspect
import io
import os
import os.path as osp
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Tuple, Union

import mmengine.hooks.checkpoint_hook as checkpoint_hook_module
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.hooks import CheckpointHook

from .around import around

#: the ``CheckpointHook`` methods that save (and remove old checkpoints)
SAVES = ('_save_checkpoint_with_step', '_save_best_checkpoint')

#: names of the temporary files :func:`write_atomic` creates (``.epoch_3.pth.1234.9f2c4e1a.tmp``).
TEMPORARY_NAME = re.compile(r'^\.(?P<name>.+)\.\d+\.[0-9a-f]{8}\.tmp$')

PathLike = Union[str, Path]


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: PathLike, data: Union[bytes, str], encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its previous content or all of ``data``.

    The data go to a temporary file in the same directory (same file system, so the rename is atomic),
    created with mode ``0o666`` less the umask as ``open(path, 'w')`` would; it is flushed, fsynced and
    renamed over ``path``. A symbolic link at ``path`` keeps pointing where it did (its target is replaced).
    On any error the temporary file is removed and ``path`` is untouched.

    Args:
        path (str | Path): the final file name; its directory is created if missing.
        data (bytes | str): the content; ``str`` is encoded with ``encoding``.
        encoding (str): text encoding for ``str`` data.
    """
    final = osp.realpath(os.fspath(path))
    directory, name = osp.split(final)
    os.makedirs(directory, exist_ok=True)
    payload = data.encode(encoding) if isinstance(data, str) else data
    temporary = osp.join(directory, f'.{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, final)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


class AtomicWriter:
    """A file-like object for writing: it collects what is written and, on a clean close, writes it to its
    path with :func:`write_atomic`; closed after an exception, it writes nothing."""

    def __init__(self, path: PathLike, binary: bool, encoding: str = 'utf-8') -> None:
        self.name = os.fspath(path)
        self._buffer = io.BytesIO() if binary else io.StringIO()
        self._encoding = encoding
        self.closed = False

    def write(self, data: Union[bytes, str]) -> int:
        return self._buffer.write(data)

    def writelines(self, lines) -> None:
        self._buffer.writelines(lines)

    def flush(self) -> None:
        pass  # nothing reaches the disk before close: that is the point

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            write_atomic(self.name, self._buffer.getvalue(), self._encoding)

    def __enter__(self) -> 'AtomicWriter':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        self.closed = True


def open_atomic(file: PathLike, mode: str = 'r', *args: Any, **kwargs: Any):
    """``open`` whose write modes (``'w'``, ``'wb'``, ``'wt'``) return an :class:`AtomicWriter`; every other
    mode (reading, appending, updating) is the builtin ``open``."""
    if isinstance(file, (str, Path)) and mode in ('w', 'wt', 'wb'):
        encoding = kwargs.get('encoding') or (args[1] if len(args) > 1 else None) or 'utf-8'
        return AtomicWriter(file, binary='b' in mode, encoding=encoding)
    return open(file, mode, *args, **kwargs)


def _atomic_put(self: LocalBackend, obj: bytes, filepath: PathLike) -> None:
    """``LocalBackend.put``, atomically."""
    write_atomic(filepath, obj)


def _atomic_put_text(self: LocalBackend, obj: str, filepath: PathLike, encoding: str = 'utf-8') -> None:
    """``LocalBackend.put_text``, atomically."""
    write_atomic(filepath, obj, encoding)


class _DeferredRemovals:
    """Stands in for a checkpoint hook's ``file_backend`` while it saves: ``remove`` and ``rmtree`` are
    recorded, everything else goes to the real backend."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.pending: List[Tuple[str, str]] = []

    def remove(self, path: PathLike) -> None:
        self.pending.append(('remove', path))

    def rmtree(self, path: PathLike) -> None:
        self.pending.append(('rmtree', path))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def run(self) -> None:
        for method, path in self.pending:
            getattr(self._backend, method)(path)


@contextlib.contextmanager
def removals_after_save(hook: CheckpointHook, *args: Any, **kwargs: Any) -> Iterator[None]:
    """Around a ``CheckpointHook`` method that removes old checkpoints and then saves: the removals run after the
    method returned (the new checkpoint written), never when it failed. Outside a training run (``val()`` or
    ``test()`` alone) the hook has no ``file_backend`` and saves nothing: nothing to defer."""
    backend = getattr(hook, 'file_backend', None)
    if backend is None or isinstance(backend, _DeferredRemovals):  # nested: _save_best_checkpoint saves the last too
        yield
        return
    deferred = _DeferredRemovals(backend)
    hook.file_backend = deferred
    try:
        yield
    finally:
        hook.file_backend = backend
    deferred.run()


def put_gap_present() -> bool:
    """Whether ``LocalBackend.put`` truncates the existing file before its write succeeds (the gap), tried on a
    temporary file with a write that fails."""
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'probe')
        with open(path, 'wb') as f:
            f.write(b'previous')
        try:
            LocalBackend().put(object(), path)  # type: ignore[arg-type]  (not bytes: the write raises)
        except TypeError:
            pass
        with open(path, 'rb') as f:
            return f.read() != b'previous'


def hook_gap_present() -> bool:
    """Whether ``CheckpointHook`` writes ``last_checkpoint`` with a plain ``open(..., 'w')`` (read from its
    source: the behaviour needs a whole training run to observe)."""
    source = inspect.getsource(CheckpointHook._save_checkpoint_with_step)
    return "open(save_file, 'w')" in source


def is_applied() -> bool:
    """Whether :func:`apply` has made the writes atomic."""
    return getattr(LocalBackend.put, '__snl_mm_patched__', False)


def apply() -> bool:
    """Make local checkpoint writes atomic and the hook's removals wait for the new checkpoint, where mmengine
    has the gap. Safe to call any number of times.

    Returns:
        bool: True when the fixes are in place; False where mmengine writes atomically already.
    """
    if is_applied() or not put_gap_present():
        return is_applied()
    _atomic_put.__snl_mm_patched__ = True
    LocalBackend.put = _atomic_put
    LocalBackend.put_text = _atomic_put_text
    if hook_gap_present():
        # the hook module's own name `open` (looked up before the builtin) serves its writes atomically
        checkpoint_hook_module.open = open_atomic
    for name in SAVES:
        around(CheckpointHook, name, __name__, removals_after_save)
    return True
