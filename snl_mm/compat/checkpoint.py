"""mmengine 0.10.7 checkpoints under torch >= 2.6 (``weights_only=True`` by default).

Upstream issue: https://github.com/open-mmlab/mmengine/issues/1655 (fix proposed in PR #1650, unmerged).
mmengine calls ``torch.load(filename, map_location=...)`` without ``weights_only``. Since torch 2.6 that means
``weights_only=True``, and a checkpoint written by mmengine's own Runner holds its ``MessageHub`` state
(``HistoryBuffer`` objects with numpy arrays), so ``load_from``, ``resume=True`` and
``mmaction.apis.init_recognizer`` fail with ``UnpicklingError: ... Unsupported global: GLOBAL
mmengine.logging.history_buffer.HistoryBuffer``.

What snl_mm does: while, and only while, mmengine's :class:`~mmengine.runner.CheckpointLoader` loads a
file, torch's weights-only unpickler additionally accepts the globals that mmengine's own checkpoints contain
(:data:`MMENGINE_CHECKPOINT_GLOBALS`), found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on
checkpoints written by the Runner:

* ``mmengine.logging.history_buffer.HistoryBuffer``;
* ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy._core.multiarray.scalar`` (the arrays and scalars inside a ``HistoryBuffer``; also under their
  numpy 1.x names ``numpy.core.multiarray.*``, which checkpoints of the OpenMMLab model zoos carry) and
  the numeric dtype classes ``numpy.dtypes.*DType`` (bool, integer, float, complex), on which the
  unpickler sets a dtype's state;
* ``builtins.getattr``, with which pickle names ``HistoryBuffer.min``/``max``/``mean``/``current`` (the
  buffer's statistics methods). It is served by :func:`history_buffer_getattr`, which resolves only public
  methods of ``HistoryBuffer`` and refuses everything else.

``weights_only`` stays on: any other global (``os.system``, an arbitrary class) is still refused, a plain
``torch.load`` outside mmengine's loader keeps torch's default list, and nothing sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``. A checkpoint that needs more (for instance a custom statistics
method registered with ``HistoryBuffer.register_statistics``) can be loaded inside
``torch.serialization.safe_globals([...])`` by a user who trusts it.
"""
import contextlib
import inspect
import os.path as osp
import pickle
import tempfile
from typing import Any, Callable, Iterator, List, Tuple

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from .around import around, is_around

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

UPSTREAM_ISSUE = 'https://github.com/open-mmlab/mmengine/issues/1655'


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to the public methods of :class:`~mmengine.logging.HistoryBuffer`.

    Pickle stores the functions in ``HistoryBuffer._statistics_methods`` as ``getattr(HistoryBuffer, 'min')``;
    this stand-in for ``builtins.getattr`` serves exactly those references.

    Args:
        obj: the object pickle asks an attribute of; must be the ``HistoryBuffer`` class.
        name (str): the attribute name; must name a public function defined on ``HistoryBuffer``.

    Returns:
        The function ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: any other object or attribute.
    """
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_'):
        attr = inspect.getattr_static(HistoryBuffer, name, None)
        if inspect.isfunction(attr):
            return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in an mmengine checkpoint: snl_mm only allows the '
        'public methods of mmengine.logging.HistoryBuffer. Load a checkpoint you trust with '
        '`torch.serialization.safe_globals([...])`.')


def _numpy_globals() -> List[Tuple[Callable, str]]:
    entries = []
    for name in ('_reconstruct', 'scalar'):
        func = getattr(_multiarray, name)
        entries += [(func, f'numpy._core.multiarray.{name}'), (func, f'numpy.core.multiarray.{name}')]
    entries += [(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')]
    # numpy >= 1.25 gives each dtype its own class (numpy.dtypes.Float64DType, ...), and unpickling a
    # dtype sets its state on an instance of that class: the unpickler checks the class is allowed.
    for char in '?bBhHiIlLqQefdgFDG':
        cls = type(np.dtype(char))
        if cls is not np.dtype:
            entries.append((cls, f'{cls.__module__}.{cls.__qualname__}'))
    return list(dict.fromkeys(entries))


#: ``(object, pickled name)`` pairs accepted while mmengine's CheckpointLoader reads a file.
MMENGINE_CHECKPOINT_GLOBALS: List[Tuple[Callable, str]] = [
    (HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (history_buffer_getattr, 'builtins.getattr'),
] + _numpy_globals()


@contextlib.contextmanager
def mmengine_checkpoint_globals() -> Iterator[None]:
    """Context in which ``torch.load`` also accepts :data:`MMENGINE_CHECKPOINT_GLOBALS`.

    Re-entrant: entries already allowed (by an outer context or by the user) are neither added nor removed.

    Example:
        >>> with mmengine_checkpoint_globals():
        ...     ckpt = torch.load('work_dirs/x/epoch_1.pth', map_location='cpu')
    """
    present = set(torch.serialization.get_safe_globals())
    missing = [g for g in MMENGINE_CHECKPOINT_GLOBALS if g not in present]
    with torch.serialization.safe_globals(missing):
        yield


def is_applied() -> bool:
    """Whether mmengine's checkpoint loader loads within :func:`mmengine_checkpoint_globals`."""
    return is_around(CheckpointLoader, 'load_checkpoint', __name__)


def gap_present() -> bool:
    """Whether mmengine's checkpoint loader fails on a checkpoint of its own (the gap), by trying it once on a
    small file holding a ``HistoryBuffer``, as the Runner's checkpoints do."""
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'probe.pth')
        buffer = HistoryBuffer()
        buffer.update(1.0)
        torch.save({'message_hub': {'log_scalars': {'loss': buffer}}}, path)
        try:
            CheckpointLoader.load_checkpoint(path, map_location='cpu', logger='silent')
        except pickle.UnpicklingError:
            return True
    return False


def apply() -> bool:
    """Make mmengine's :meth:`CheckpointLoader.load_checkpoint` load within
    :func:`mmengine_checkpoint_globals`, where mmengine has the gap. Safe to call any number of times.

    Every mmengine path to a checkpoint goes through that method: ``Runner.load_checkpoint`` (``load_from``),
    ``Runner.resume``, ``mmengine.runner.load_checkpoint`` (``init_recognizer``, ``init_model``) and the
    ``torchvision://``, ``open-mmlab://``, ``http(s)://`` schemes.

    Returns:
        bool: True when in effect; False where mmengine loads its own checkpoints already (torch < 2.6, or an
        mmengine with the fix).
    """
    if not is_applied() and hasattr(torch.serialization, 'safe_globals') and gap_present():
        around(CheckpointLoader, 'load_checkpoint', __name__, lambda *args, **kwargs: mmengine_checkpoint_globals())
    return is_applied()
