"""Exact resume (snl_mm.compat.exact_resume), in process: a Runner interrupted at an iteration and resumed ends
bitwise equal to the Runner that was not interrupted, whatever draws the data pipeline and the model make.

The data pipeline draws from numpy's, Python's and torch's global generators (as mmcv's transforms do), in the
main process or in DataLoader workers; the model draws dropout masks; validation runs after every epoch. The
interruption is an exception raised by a hook before an iteration; the run resumes from the last checkpoint
written before it. The demo config killed with SIGKILL, on 1 and 2 processes, is in ``test_crash_resume.py``.
"""
import random
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

import snl_mm.compat  # noqa: F401
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop, Runner
from snl_mm.compat import exact_resume, random_state
from tests.compat.tiny_runner import state, tiny_runner, validation

EPOCH_ITERS = 6  # 24 samples, batch 4


class Interrupt(Exception):
    pass


class InterruptBeforeIter(Hook):

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == self.at:
            raise Interrupt(self.at)


def leave_seeds(worker_id: int) -> None:
    """A ``worker_init_fn`` that keeps torch's seeding of the workers (from a base seed the main process draws
    when an epoch's iterator is created) instead of mmengine's fixed seeds."""


def _runner(work_dir: Path, name: str, loop: str, workers: int, checkpoint: dict, resume: bool = False,
            interrupt_at: Optional[int] = None, persistent: bool = False, torch_seeding: bool = False) -> Runner:
    if loop == 'epoch':
        train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=1)
        sampler = dict(type='DefaultSampler', shuffle=True)
        scheduler = dict(type='MultiStepLR', milestones=[2], gamma=0.1, by_epoch=True, end=3)
    else:
        train_cfg = dict(type='IterBasedTrainLoop', max_iters=3 * EPOCH_ITERS, val_interval=EPOCH_ITERS)
        sampler = dict(type='InfiniteSampler', shuffle=True)
        scheduler = dict(type='MultiStepLR', milestones=[12], gamma=0.1, by_epoch=False, end=18)
    runner = tiny_runner(work_dir, name, dropout=0.3, size=24, augment=True, train_cfg=train_cfg,
                         param_scheduler=scheduler,
                         default_hooks=dict(checkpoint=dict(type='CheckpointHook', **checkpoint)),
                         custom_hooks=[InterruptBeforeIter(interrupt_at)] if interrupt_at is not None else None,
                         resume=resume, **validation(size=8))
    loader = runner._train_dataloader
    loader.update(sampler=sampler, num_workers=workers, persistent_workers=persistent and workers > 0)
    if torch_seeding:
        loader['worker_init_fn'] = dict(type=leave_seeds)
    return runner


def _train_interrupted_and_resumed(tmp_path: Path, loop: str, workers: int, checkpoint: dict,
                                   interrupt_at: int, **options) -> Runner:
    work_dir = tmp_path / 'interrupted'
    with pytest.raises(Interrupt):
        _runner(work_dir, 'interrupted', loop, workers, checkpoint, interrupt_at=interrupt_at, **options).train()
    # whatever the interrupted process left in its global generators is not what the resumed run starts with
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    resumed = _runner(work_dir, 'resumed', loop, workers, checkpoint, resume=True, **options)
    resumed.train()
    return resumed


def _log(runner: Runner) -> str:
    return next(Path(runner.log_dir).glob('*.log')).read_text()


# (loop, workers, checkpoint hook, interrupted before iteration, options): the checkpoint resumed from is
# mid-epoch (iteration 8 = epoch 2, batch 2), at an epoch end (epoch 1, before validation ran), or iter-based;
# workers seeded by mmengine (fixed seeds) or by torch (from the epoch's start states)
CASES = {
    'epoch-loop-mid-epoch': ('epoch', 0, dict(by_epoch=False, interval=4), 10, {}),
    'epoch-loop-mid-epoch-workers': ('epoch', 2, dict(by_epoch=False, interval=4), 10, {}),
    'epoch-loop-mid-epoch-workers-torch-seeds': ('epoch', 2, dict(by_epoch=False, interval=4), 10,
                                                 dict(torch_seeding=True)),
    'epoch-loop-epoch-end': ('epoch', 0, dict(by_epoch=True, interval=1), 9, {}),
    'iter-loop-workers': ('iter', 2, dict(by_epoch=False, interval=4), 10, {}),
}


@pytest.mark.parametrize('case', list(CASES))
def test_resumed_run_ends_bitwise_equal(tmp_path: Path, case: str) -> None:
    loop, workers, checkpoint, interrupt_at, options = CASES[case]
    reference = _runner(tmp_path / 'reference', 'reference', loop, workers, checkpoint, **options)
    reference.train()
    resumed = _train_interrupted_and_resumed(tmp_path, loop, workers, checkpoint, interrupt_at, **options)
    assert resumed.iter == reference.iter == 3 * EPOCH_ITERS
    a, b = state(reference), state(resumed)
    for key in a:
        assert torch.equal(a[key], b[key]), f'{key} differs by {(a[key] - b[key]).abs().max()}'


def test_checkpoint_entry(tmp_path: Path) -> None:
    """The entry: one rank's states, the position within the epoch, the sampler's seed; plain data that loads
    with weights_only and no allowed global."""
    _runner(tmp_path, 'entry', 'epoch', 0, dict(by_epoch=False, interval=4)).train()
    entry = torch.load(tmp_path / 'iter_8.pth', map_location='cpu', weights_only=False)[exact_resume.CHECKPOINT_KEY]
    assert entry['world_size'] == 1 and len(entry['ranks']) == 1
    assert entry['position'] == 8 - EPOCH_ITERS
    assert isinstance(entry['sampler_seed'], int)
    torch.save(entry, tmp_path / 'entry.pt')
    reloaded = torch.load(tmp_path / 'entry.pt', weights_only=True)['ranks'][0]
    assert set(reloaded) == {'now', 'epoch_start'}
    # the states restore: the draws after a restore are the draws after the capture
    random_state.restore(reloaded['now'])
    first = (np.random.rand(), random.random(), torch.rand(()))
    random_state.restore(reloaded['now'])
    assert (np.random.rand(), random.random(), torch.rand(())) == first


def test_isolated_leaves_the_random_states_alone() -> None:
    before = random_state.capture()
    with random_state.isolated():
        np.random.rand(10), random.random(), torch.rand(3)
    after = random_state.capture()
    assert torch.equal(after['torch'], before['torch'])
    assert torch.equal(after['numpy']['keys'], before['numpy']['keys'])
    assert after['python'] == before['python']


def test_checkpoint_without_states_resumes_with_a_warning(tmp_path: Path) -> None:
    """A checkpoint written without the fix resumes as mmengine does, says so, and ends elsewhere: the
    bitwise test above would catch a resume that ignored the states."""
    checkpoint = dict(by_epoch=True, interval=1)
    reference = _runner(tmp_path / 'reference', 'reference', 'epoch', 0, checkpoint)
    reference.train()
    work_dir = tmp_path / 'interrupted'
    with pytest.raises(Interrupt):
        _runner(work_dir, 'interrupted', 'epoch', 0, checkpoint, interrupt_at=9).train()
    path = work_dir / 'epoch_1.pth'
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    del ckpt[exact_resume.CHECKPOINT_KEY]
    torch.save(ckpt, path)
    resumed = _runner(work_dir, 'resumed', 'epoch', 0, checkpoint, resume=True)
    resumed.train()
    assert 'the checkpoint holds no random states' in _log(resumed)
    a, b = state(reference), state(resumed)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_persistent_workers_are_reported(tmp_path: Path) -> None:
    resumed = _train_interrupted_and_resumed(tmp_path, 'epoch', 2, dict(by_epoch=True, interval=1), 9,
                                             persistent=True)
    assert 'persistent_workers=True' in _log(resumed)


def test_apply_idempotent() -> None:
    before = (Runner.resume, EpochBasedTrainLoop.run_epoch)
    assert exact_resume.apply() and exact_resume.apply()
    assert (Runner.resume, EpochBasedTrainLoop.run_epoch) == before
