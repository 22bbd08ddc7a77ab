"""Auto-resume after a kill (snl_mm.compat.resume): when ``last_checkpoint`` is missing, empty or names a file
that does not load, the newest checkpoint that loads completely, with the reason in the log."""
import logging
import os
import shutil
from pathlib import Path
from typing import List, Tuple

import pytest
import torch

import snl_mm.compat  # noqa: F401
from mmengine.logging import MMLogger
from mmengine.runner import find_latest_checkpoint
from snl_mm.compat import resume as compat_resume
from tests.compat.tiny_runner import tiny_runner


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> Path:
    """epoch_1.pth, epoch_2.pth, epoch_3.pth of a 3-epoch run (every one kept)."""
    work_dir = tmp_path_factory.mktemp('run')
    hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=-1))
    tiny_runner(work_dir, 'checkpoints', default_hooks=hooks).train()
    return work_dir


@pytest.fixture
def work_dir(checkpoints: Path, tmp_path: Path) -> Path:
    """A copy of the run's checkpoints, modification times in epoch order, and its ``last_checkpoint``."""
    for epoch in (1, 2, 3):
        shutil.copy(checkpoints / f'epoch_{epoch}.pth', tmp_path)
        os.utime(tmp_path / f'epoch_{epoch}.pth', (1e9 + epoch, 1e9 + epoch))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    return tmp_path


def _truncate(path: Path, size: int = 8192) -> None:
    data = path.read_bytes()
    assert len(data) > size
    mtime = path.stat().st_mtime
    path.write_bytes(data[:size])
    os.utime(path, (mtime, mtime))


def _found(work_dir: Path) -> Tuple[str, str]:
    """What ``find_latest_checkpoint`` returns, and what it logged."""
    records: List[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        return find_latest_checkpoint(str(work_dir)), '\n'.join(r.getMessage() for r in records)
    finally:
        logger.removeHandler(handler)


def test_last_checkpoint_is_taken_when_it_loads(work_dir: Path) -> None:
    assert find_latest_checkpoint(str(work_dir)) == str(work_dir / 'epoch_3.pth')


@pytest.mark.parametrize('fault,expected,reason', [
    ('empty pointer', 'epoch_3.pth', 'last_checkpoint is empty'),
    ('no pointer', 'epoch_3.pth', 'last_checkpoint does not exist'),
    ('pointer to a missing file', 'epoch_3.pth', 'which cannot be resumed from: it does not exist'),
    ('pointer to a truncated file', 'epoch_2.pth', 'is not a readable checkpoint'),
    ('newest file empty', 'epoch_2.pth', 'last_checkpoint is empty'),
])
def test_fallback_to_the_newest_readable_checkpoint(work_dir: Path, fault: str, expected: str, reason: str) -> None:
    pointer = work_dir / 'last_checkpoint'
    if fault == 'empty pointer':
        pointer.write_text('')
    elif fault == 'no pointer':
        pointer.unlink()
    elif fault == 'pointer to a missing file':
        pointer.write_text(str(work_dir / 'epoch_4.pth'))
    elif fault == 'pointer to a truncated file':
        _truncate(work_dir / 'epoch_3.pth')
    elif fault == 'newest file empty':
        pointer.write_text('')
        (work_dir / 'epoch_3.pth').write_bytes(b'')
        os.utime(work_dir / 'epoch_3.pth', (2e9, 2e9))
    found, message = _found(work_dir)
    assert found == str(work_dir / expected)
    assert reason in message and f'Resuming from {work_dir / expected}' in message
    if fault == 'newest file empty':
        assert f'skipped {work_dir / "epoch_3.pth"}: it is empty' in message


def test_leftovers_of_interrupted_writes_are_removed(work_dir: Path) -> None:
    leftover = work_dir / '.epoch_4.pth.1234.0123abcd.tmp'
    leftover.write_bytes(b'PK\x03\x04partial')
    assert find_latest_checkpoint(str(work_dir)) == str(work_dir / 'epoch_3.pth')
    assert not leftover.exists() and (work_dir / 'epoch_3.pth').exists()


def test_nothing_to_resume(tmp_path: Path) -> None:
    assert find_latest_checkpoint(str(tmp_path)) is None
    # weights someone put in a fresh work dir are not a run to resume
    torch.save({'fc1.weight': torch.ones(2)}, tmp_path / 'pretrained.pth')
    assert find_latest_checkpoint(str(tmp_path)) is None


def test_no_readable_checkpoint_is_an_error(work_dir: Path) -> None:
    for epoch in (1, 2, 3):
        _truncate(work_dir / f'epoch_{epoch}.pth')
    with pytest.raises(compat_resume.NoReadableCheckpointError) as info:
        find_latest_checkpoint(str(work_dir))
    message = str(info.value)
    for epoch in (1, 2, 3):
        assert f'epoch_{epoch}.pth' in message
    assert 'zip archive is incomplete' in message and '--resume PATH' in message


def test_runner_resumes_past_an_empty_last_checkpoint(work_dir: Path) -> None:
    (work_dir / 'last_checkpoint').write_text('')
    _truncate(work_dir / 'epoch_3.pth')
    runner = tiny_runner(work_dir, 'resumed', train_cfg=dict(by_epoch=True, max_epochs=3), resume=True)
    runner.train()
    assert runner.iter == 12  # resumed at epoch 2 (8 iterations), trained the third
    assert (work_dir / 'last_checkpoint').read_text().endswith('epoch_3.pth')


def test_the_gap_and_idempotence() -> None:
    assert compat_resume.gap_present()  # mmengine's own function returns '' for an empty last_checkpoint
    assert compat_resume.apply() and compat_resume.apply() and compat_resume.is_applied()
