"""One clear error for a file that is not a readable checkpoint.

The gap, in mmengine 0.10.7 (``CheckpointLoader.load_checkpoint`` and ``load_from_local`` in
``mmengine/runner/checkpoint.py``) on torch 2.x: ``torch.load``'s own exception reaches the user, naming
neither the file nor the problem. A checkpoint cut to 8 KiB gives ``OSError: [Errno 22] Invalid argument``, an
empty one a bare ``EOFError``, a text file ``KeyError: 101``, and a file the weights-only unpickler refuses a
``Weights only load failed`` message whose first advice is to re-run ``torch.load`` with
``weights_only=False``, which would execute whatever the file holds.

What snl_mm does: when mmengine's loader fails on a local file (``load_from``, ``resume``, ``--resume PATH``,
``init_cfg=dict(type='Pretrained')``, ``mmengine.runner.load_checkpoint``), :func:`unreadable_reason` looks at
the file itself: empty, an incomplete or damaged zip archive (torch's format since 1.6), neither of torch's
formats, a legacy-format file that ends early, or content the weights-only unpickler refuses (with torch's
one-line reason, e.g. ``Unsupported global: GLOBAL posix.system``). Then one
:class:`UnreadableCheckpointError` names the file and says why it is not a readable checkpoint, without
torch's advice to turn ``weights_only`` off; ``weights_only`` stays on, so crafted pickles are still refused.
An error that is not about the file's content (a missing file, a ``map_location`` naming an absent device)
passes through unchanged.
"""
import contextlib
import os
import os.path as osp
import pickle
import re
import tempfile
import zipfile
from typing import Any, Iterator, Optional

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from .around import around, is_around

#: the first bytes of torch's zip format and of its legacy format (the pickled magic number).
ZIP_HEAD = b'PK\x03\x04'
LEGACY_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]  # without the STOP opcode


class UnreadableCheckpointError(pickle.UnpicklingError):
    """A file given as a checkpoint is not one torch can read (empty, cut short, another format, or holding
    objects the weights-only unpickler refuses).

    Attributes:
        path (str): the file.
        reason (str): why it is not a readable checkpoint.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f'{path} is not a readable checkpoint: {reason}.')
        self.path = path
        self.reason = reason


def weights_only_refusal(message: str) -> str:
    """torch's one-line reason from a ``Weights only load failed`` message, without its advice.

    Args:
        message (str): the text of torch's ``UnpicklingError``.

    Returns:
        str: e.g. ``'Unsupported global: GLOBAL posix.system'``.
    """
    text = message.split('Check the documentation of torch.load')[0]
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    elif 'trusted source.' in text:
        text = text.split('trusted source.', 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[0] if lines else message.strip().splitlines()[0]
    return re.split(r' was not an allowed global by default| Please use `torch\.serialization', detail)[0].strip(' .')


def unreadable_reason(path: str, error: BaseException) -> Optional[str]:
    """Why ``path`` is not a readable checkpoint, judged from the file after ``torch.load`` raised ``error``.

    Args:
        path (str): a local file that failed to load.
        error (BaseException): what loading it raised.

    Returns:
        str | None: the reason, or None when the file is an intact torch archive and the error is not the
        weights-only unpickler's (the error is then about something else, e.g. the device to load to).
    """
    size = os.path.getsize(path)
    if size == 0:
        return 'the file is empty'
    with open(path, 'rb') as f:
        head = f.read(len(LEGACY_HEAD))
    refused = isinstance(error, pickle.UnpicklingError) and 'Weights only load failed' in str(error)
    if head.startswith(ZIP_HEAD):
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return (f'its zip archive is incomplete ({size} bytes, no central directory at the end), as a file '
                    'cut short by an interrupted write or copy is')
        if damaged is not None:
            return f'member {damaged} of its zip archive is damaged (its CRC does not match)'
        if refused:
            return ('it holds objects that loading with weights_only refuses '
                    f'({weights_only_refusal(str(error))})')
        return None
    if not head.startswith(LEGACY_HEAD):
        return (f"it is in neither of torch's checkpoint formats (a zip archive, or the legacy pickle format); "
                f'it begins with {head[:12]!r}')
    if refused and ('Unsupported global' in str(error) or 'unsupported GLOBAL' in str(error)):
        return f'it holds objects that loading with weights_only refuses ({weights_only_refusal(str(error))})'
    return (f'it is a legacy-format torch file that ends early or is damaged ({size} bytes; '
            f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else "no message"})')


def _local_file(filename: Any) -> Optional[str]:
    if isinstance(filename, (str, os.PathLike)):
        path = osp.expanduser(os.fspath(filename))
        if osp.isfile(path):
            return path
    return None


def is_applied() -> bool:
    """Whether mmengine's checkpoint loader reports unreadable files with :class:`UnreadableCheckpointError`."""
    return is_around(CheckpointLoader, 'load_checkpoint', __name__)


def gap_present() -> bool:
    """Whether mmengine's loader fails on an empty file without naming it (the gap), tried on a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'empty.pth')
        open(path, 'wb').close()
        try:
            CheckpointLoader.load_checkpoint(path, map_location='cpu', logger='silent')
        except Exception as err:  # the question is what it raises
            return path not in str(err)
    return False


@contextlib.contextmanager
def clear_errors(cls: type, filename: Any, *args: Any, **kwargs: Any) -> Iterator[None]:
    """Around mmengine's loader: an unreadable local file raises :class:`UnreadableCheckpointError`."""
    try:
        yield
    except (UnreadableCheckpointError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as err:  # torch.load raises any of a dozen types for a bad file: judge the file
        path = _local_file(filename)
        reason = unreadable_reason(path, err) if path is not None else None
        if reason is None:
            raise
        raise UnreadableCheckpointError(os.fspath(filename), reason) from None


def apply() -> bool:
    """Make mmengine's :meth:`CheckpointLoader.load_checkpoint` raise :class:`UnreadableCheckpointError` for
    unreadable local files, where mmengine has the gap. Safe to call any number of times.

    Returns:
        bool: True when in effect; False where mmengine names the file already.
    """
    if not is_applied() and gap_present():
        around(CheckpointLoader, 'load_checkpoint', __name__, clear_errors)
    return is_applied()
