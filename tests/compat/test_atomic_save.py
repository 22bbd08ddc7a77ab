"""Crash-safe checkpoint writes (snl_mm.compat.atomic_save), in process: writes that fail half-way leave the
previous file whole, and old checkpoints are removed only once the new one is written. The same under SIGKILL,
in a training process, is in ``test_crash_resume.py``."""
import os
import stat
from pathlib import Path

import pytest
import torch

import snl_mm.compat  # noqa: F401
import mmengine.hooks.checkpoint_hook as checkpoint_hook_module
from mmengine.fileio import LocalBackend
from mmengine.hooks import Hook
from snl_mm.compat import atomic_save
from tests.compat.tiny_runner import tiny_runner


class Unwritable:
    """Not bytes: writing it raises TypeError, after the file was opened."""


def _leftovers(directory: Path) -> list:
    return [p.name for p in directory.iterdir() if atomic_save.TEMPORARY_NAME.match(p.name)]


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / 'sub' / 'file.bin'
    atomic_save.write_atomic(path, b'first')
    atomic_save.write_atomic(path, 'second')
    assert path.read_bytes() == b'second'
    with pytest.raises(TypeError):
        atomic_save.write_atomic(path, Unwritable())  # type: ignore[arg-type]
    assert path.read_bytes() == b'second' and _leftovers(path.parent) == []


def test_write_atomic_permissions_and_links(tmp_path: Path) -> None:
    plain = tmp_path / 'plain'
    with open(plain, 'w') as f:
        f.write('x')
    atomic_save.write_atomic(tmp_path / 'atomic', 'x')
    mode = stat.S_IMODE(os.stat(tmp_path / 'atomic').st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode)  # 0o666 less the umask, as open() gives
    link = tmp_path / 'link'
    link.symlink_to(plain)
    atomic_save.write_atomic(link, 'through the link')
    assert link.is_symlink() and plain.read_text() == 'through the link'


@pytest.mark.parametrize('method', ['put', 'put_text'])
def test_local_backend_writes_atomically(tmp_path: Path, method: str) -> None:
    path = tmp_path / 'epoch_1.pth'
    path.write_bytes(b'complete checkpoint')
    with pytest.raises(TypeError):
        getattr(LocalBackend(), method)(Unwritable(), path)
    assert path.read_bytes() == b'complete checkpoint' and _leftovers(tmp_path) == []
    getattr(LocalBackend(), method)(b'new' if method == 'put' else 'new', path)
    assert path.read_bytes() == b'new'
    assert not atomic_save.put_gap_present()


def test_checkpoint_hook_writes_last_checkpoint_atomically(tmp_path: Path) -> None:
    """mmengine's hook still says ``open(save_file, 'w')``; in its module that name is the atomic open."""
    assert atomic_save.hook_gap_present()
    assert checkpoint_hook_module.open is atomic_save.open_atomic
    pointer = tmp_path / 'last_checkpoint'
    pointer.write_text('epoch_1.pth')
    with pytest.raises(RuntimeError):
        with checkpoint_hook_module.open(pointer, 'w') as f:
            f.write('epoch_')
            raise RuntimeError('killed before the write ended')
    assert pointer.read_text() == 'epoch_1.pth'
    with checkpoint_hook_module.open(pointer, 'w') as f:
        f.write('epoch_2.pth')
    assert pointer.read_text() == 'epoch_2.pth' and _leftovers(tmp_path) == []
    with checkpoint_hook_module.open(pointer) as f:  # reading is the builtin open
        assert f.read() == 'epoch_2.pth'


class FailSecondSave(Hook):
    """A disk that fills up: the second checkpoint cannot be written."""

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if checkpoint['meta']['epoch'] == 2:
            raise OSError(28, 'No space left on device')


def test_old_checkpoint_kept_until_the_new_one_is_written(tmp_path: Path) -> None:
    """``max_keep_ckpts=1``: mmengine removes epoch_1.pth before writing epoch_2.pth; here it stays when the
    second write fails, and goes once a write succeeds."""
    hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1))
    with pytest.raises(OSError, match='No space left'):
        tiny_runner(tmp_path / 'full', 'full', default_hooks=hooks, custom_hooks=[FailSecondSave()]).train()
    assert sorted(p.name for p in (tmp_path / 'full').glob('*.pth')) == ['epoch_1.pth']
    assert (tmp_path / 'full' / 'last_checkpoint').read_text().endswith('epoch_1.pth')
    torch.load(tmp_path / 'full' / 'epoch_1.pth', weights_only=False)

    tiny_runner(tmp_path / 'ok', 'ok', default_hooks=hooks).train()
    assert sorted(p.name for p in (tmp_path / 'ok').glob('*.pth')) == ['epoch_3.pth']


def test_apply_idempotent() -> None:
    from mmengine.hooks import CheckpointHook
    before = (LocalBackend.put, CheckpointHook._save_checkpoint_with_step)
    assert atomic_save.apply() and atomic_save.apply()
    assert (LocalBackend.put, CheckpointHook._save_checkpoint_with_step) == before
