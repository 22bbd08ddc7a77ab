"""Exact resume: a run killed at any iteration and resumed ends bitwise equal to the run that was not stopped.

The gap, in mmengine 0.10.7 (no upstream issue): ``Runner.save_checkpoint`` stores the model, optimizer,
schedulers and message hub, and ``Runner.resume`` re-seeds, but

* no checkpoint holds the random states the run draws from: numpy's global generator (mmcv's transforms, e.g.
  ``RandomFlip``), Python's ``random``, torch's CPU and CUDA generators. The demo config killed at epoch 3 of
  4 and resumed ends 0.025 (max abs) away from the uninterrupted run;
* ``EpochBasedTrainLoop.run_epoch`` (``mmengine/runner/loops.py``) starts a resumed epoch at its first batch:
  an iteration checkpoint taken mid-epoch trains that epoch's first batches twice;
* validation draws from the training's torch generator (every ``DataLoader`` iterator draws its workers'
  base seed), so the states after an epoch checkpoint depend on whether validation ran.

What snl_mm does:

* a Runner that trains gets an :class:`ExactResumeHook` when ``train()`` starts (one more hook in
  ``runner.hooks`` from then on; ``val()`` and ``test()`` alone, and the hooks a Runner registers when it is
  built, are mmengine's). It puts :data:`CHECKPOINT_KEY` into each checkpoint: the random states of every rank
  (gathered from all processes when the checkpoint hook saves), each rank's states at the start of the running
  epoch, the number of batches of that epoch already trained, and the sampler's seed
  (:mod:`snl_mm.compat.random_state` holds them as plain numbers and tensors);
* ``Runner.resume`` hands them to the train loop. Around mmengine's own ``EpochBasedTrainLoop.run_epoch``
  (:func:`epoch_seams`), a resumed epoch starts from the epoch's recorded start states, loads again the batches
  trained before the checkpoint (so that the data pipeline, in the main process or in workers, draws exactly what
  it drew) and continues with the states of the checkpoint. ``IterBasedTrainLoop`` already loads the trained
  batches again ("Advance dataloader"); its iterator restores the checkpoint's states right after;
* ``ValLoop.run`` leaves the random states as it found them.

Each is a context manager around mmengine's function (:mod:`snl_mm.compat.around`), never a copy of it.

Not exact, and said in the log at resume: ``persistent_workers=True`` with workers (their random state carries
over between epochs and a resumed run starts them afresh), an iteration-based loop over a finite sampler with
workers past the end of its data, a different number of processes, and checkpoints written without this fix.
"""
import contextlib
import functools
import inspect
import logging
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.dist import all_gather_object, get_dist_info, is_distributed
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, Runner, ValLoop
from mmengine.runner.base_loop import BaseLoop

from . import random_state
from .around import around, is_around

#: the checkpoint entry with the random states and the position within the epoch.
CHECKPOINT_KEY = 'snl_mm_resume'


def _warn(message: str) -> None:
    print_log(f'Exact resume: {message}', logger='current', level=logging.WARNING)


class EpochStart(NamedTuple):
    """What a train loop records when an epoch starts: the epoch, the iteration before its first batch, and the
    random states with which its data iterator was created."""
    epoch: int
    iter: int
    states: random_state.RandomState


class ResumePoint:
    """Where a resumed run continues: ``position`` batches into its first epoch, with this rank's states.

    Args:
        position (int): batches of the resumed epoch trained before the checkpoint (0: at an epoch start).
        now (dict | None): the states when the checkpoint was written.
        epoch_start (dict | None): the states with which the resumed epoch's data iterator was created.
    """

    def __init__(self, position: int, now: Optional[dict], epoch_start: Optional[dict]) -> None:
        self.position = position
        self.now = now
        self.epoch_start = epoch_start

    def restore_epoch_start(self) -> None:
        if self.epoch_start is not None:
            random_state.restore(self.epoch_start)

    def restore_now(self) -> None:
        if self.now is not None:
            problem = random_state.restore(self.now)
            if problem:
                _warn(f'{problem}: the CUDA generators are not restored.')


def _training_states(runner: Runner) -> random_state.RandomState:
    """The training's random states: during validation, those validation will restore."""
    return getattr(runner, '_snl_mm_states_before_val', None) or random_state.capture()


def _rank_states(runner: Runner) -> Dict[str, Any]:
    loop = runner._train_loop
    start: Optional[EpochStart] = getattr(loop, '_snl_mm_epoch_start', None)
    return dict(now=_training_states(runner), epoch_start=start.states if start else None)


@contextlib.contextmanager
def rank_states(hook: CheckpointHook, runner: Runner, *args: Any, best: bool = False,
                **kwargs: Any) -> Iterator[None]:
    """Around a ``CheckpointHook`` save that every rank calls before rank 0 writes: every rank's states are
    gathered first (a collective call, so only where all ranks are known to call it: in a training run, for a
    save that happens)."""
    if getattr(runner, '_snl_mm_rank_states', None) is not None or not hasattr(hook, 'file_backend') or (
            best and not hook.save_best):
        yield
        return
    local = _rank_states(runner)
    runner._snl_mm_rank_states = all_gather_object(local) if is_distributed() else [local]
    try:
        yield
    finally:
        runner._snl_mm_rank_states = None


def _train_sampler(runner: Runner) -> Any:
    loop = runner._train_loop
    loader = getattr(loop, 'dataloader', None) if isinstance(loop, BaseLoop) else None
    if loader is None:
        return None
    sampler = getattr(loader, 'sampler', None)
    batch_sampler = getattr(loader, 'batch_sampler', None)
    return getattr(batch_sampler, 'sampler', sampler) if batch_sampler is not None else sampler


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Writes the random states and the position within the epoch into every checkpoint, and keeps those of
    the last checkpoint loaded for ``Runner.resume``. Added to a Runner when its ``train()`` starts."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.loaded: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        ranks: List[dict] = getattr(runner, '_snl_mm_rank_states', None) or [_rank_states(runner)]
        meta = checkpoint.get('meta', {})
        start: Optional[EpochStart] = getattr(runner._train_loop, '_snl_mm_epoch_start', None)
        # an iteration checkpoint inside an epoch records how far into it; an epoch checkpoint (meta epoch =
        # the next epoch) or one written during validation resumes at an epoch start
        position = meta['iter'] - start.iter if start is not None and meta.get('epoch') == start.epoch else 0
        sampler = _train_sampler(runner)
        checkpoint[CHECKPOINT_KEY] = dict(
            version=1, world_size=get_dist_info()[1], position=int(position), ranks=ranks,
            sampler_seed=getattr(sampler, 'seed', None))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.loaded = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None


def _resume_point(runner: Runner, entry: Optional[dict]) -> Optional[ResumePoint]:
    """This rank's :class:`ResumePoint` from a checkpoint's entry; warns where the resume cannot be exact."""
    if entry is None:
        _warn('the checkpoint holds no random states (written without snl_mm.compat): training continues, '
              'with random draws that differ from an uninterrupted run.')
        return None
    rank, world_size = get_dist_info()
    states: Dict[str, Any] = {}
    if entry['world_size'] != world_size:
        _warn(f'the checkpoint was written by {entry["world_size"]} processes and this run has {world_size}: '
              'their random states are not restored.')
    elif rank < len(entry['ranks']):
        states = entry['ranks'][rank]
    else:
        _warn(f'the checkpoint holds no random states for rank {rank}.')

    sampler = _train_sampler(runner)
    seed = entry.get('sampler_seed')
    if seed is not None and getattr(sampler, 'seed', seed) != seed:
        if isinstance(sampler, DefaultSampler):  # it reads its seed when each epoch starts
            sampler.seed = seed
        else:
            _warn(f'the sampler was seeded with {sampler.seed}, the checkpoint\'s with {seed}: the data order '
                  'differs (set `randomness.seed` to resume exactly).')
    loader = getattr(runner._train_loop, 'dataloader', None)
    if getattr(loader, 'num_workers', 0) > 0 and getattr(loader, 'persistent_workers', False) and isinstance(
            runner._train_loop, EpochBasedTrainLoop):
        _warn('persistent_workers=True: the data workers of an uninterrupted run carry their random state from '
              'epoch to epoch, the resumed run starts new ones, so the data augmentation after resuming differs '
              '(persistent_workers=False resumes exactly).')
    loop = runner._train_loop
    if (isinstance(loop, IterBasedTrainLoop) and getattr(loader, 'num_workers', 0) > 0
            and sampler is not None and not isinstance(sampler, InfiniteSampler) and loop.iter >= len(loader)):
        _warn('an iteration-based loop over a finite sampler restarts its data iterator at the end of the data, '
              'and its workers are seeded from the random state of that moment, which loading the trained batches '
              'again does not reproduce: the data augmentation after resuming differs (InfiniteSampler resumes '
              'exactly).')
    return ResumePoint(entry['position'], states.get('now'), states.get('epoch_start'))


class _RestoreAfter:
    """An iterator that restores the checkpoint's random states after ``skip`` items: after
    ``IterBasedTrainLoop`` has loaded again the batches trained before the checkpoint."""

    def __init__(self, iterator: Any, skip: int, point: ResumePoint) -> None:
        self._iterator = iterator
        self._skip = skip
        self._point: Optional[ResumePoint] = point

    def __iter__(self) -> '_RestoreAfter':
        return self

    def __next__(self) -> Any:
        if self._skip == 0 and self._point is not None:
            self._point.restore_now()
            self._point = None
        self._skip -= 1
        return next(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)


@contextlib.contextmanager
def resume_exactly(runner: Runner, *args: Any, **kwargs: Any) -> Iterator[None]:
    """Around ``Runner.resume``: the loaded checkpoint's states go to the train loop."""
    hook = next((h for h in runner.hooks if isinstance(h, ExactResumeHook)), None)
    yield
    point = _resume_point(runner, hook.loaded) if hook is not None else None
    loop = runner.train_loop
    if point is None:
        return
    if isinstance(loop, IterBasedTrainLoop):
        loop.dataloader_iterator = _RestoreAfter(loop.dataloader_iterator, loop.iter, point)
    elif isinstance(loop, EpochBasedTrainLoop):
        loop._snl_mm_resume = point
    else:
        point.restore_now()


class _ResumedEpoch:
    """The train loop's dataloader while a resumed epoch starts: its iterator first loads again the batches
    trained before the checkpoint (so that the data pipeline, in the main process or in workers, draws what it
    drew), then continues with the checkpoint's states."""

    def __init__(self, loop: EpochBasedTrainLoop, point: ResumePoint) -> None:
        self._loop, self._loader, self._point = loop, loop.dataloader, point

    def __iter__(self) -> Iterator[Any]:
        epoch, position = self._loop._epoch, self._point.position
        print_log(f'Exact resume: loading again the {position} batches of epoch {epoch + 1} trained before the '
                  'checkpoint, so that the data pipeline draws what it drew.', logger='current')
        batches = iter(self._loader)
        for skipped in range(position):
            if next(batches, None) is None:
                _warn(f'epoch {epoch + 1} has {skipped} batches, the checkpoint was written after {position}: the '
                      'dataset changed.')
                break
        self._point.restore_now()
        return batches

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


@contextlib.contextmanager
def epoch_seams(loop: EpochBasedTrainLoop) -> Iterator[None]:
    """Around ``EpochBasedTrainLoop.run_epoch``: the epoch's start states recorded; a resumed epoch starts from
    those of its checkpoint and continues where the checkpoint was written (its batch indices too)."""
    point: Optional[ResumePoint] = getattr(loop, '_snl_mm_resume', None)
    loop._snl_mm_resume = None
    position = point.position if point is not None else 0
    if point is not None:
        point.restore_epoch_start() if position else point.restore_now()
    loop._snl_mm_epoch_start = EpochStart(loop._epoch, loop._iter - position, random_state.capture())
    if position:
        loop.dataloader = _ResumedEpoch(loop, point)
        loop.run_iter = lambda idx, data_batch: type(loop).run_iter(loop, idx + position, data_batch)
    try:
        yield
    finally:
        if position:
            loop.dataloader = loop.dataloader._loader
            del loop.run_iter
    loop._snl_mm_epoch_start = None


@contextlib.contextmanager
def isolated_val(loop: ValLoop) -> Iterator[None]:
    """Around ``ValLoop.run``: validation leaves the random states as it found them."""
    with random_state.isolated() as states:
        loop.runner._snl_mm_states_before_val = states
        try:
            yield
        finally:
            loop.runner._snl_mm_states_before_val = None


@contextlib.contextmanager
def with_hook(runner: Runner, *args: Any, **kwargs: Any) -> Iterator[None]:
    """Around ``Runner.train``: a training Runner gets an :class:`ExactResumeHook` (``val()`` and ``test()``
    alone, and the hooks a Runner registers when it is built, are mmengine's)."""
    if not any(isinstance(h, ExactResumeHook) for h in runner.hooks):
        runner.register_hook(ExactResumeHook())
    yield


#: the upstream functions the fix acts around, and how
AROUND = ((Runner, 'train', with_hook), (Runner, 'resume', resume_exactly),
          (EpochBasedTrainLoop, 'run_epoch', epoch_seams), (ValLoop, 'run', isolated_val),
          (CheckpointHook, '_save_checkpoint_with_step', rank_states),
          (CheckpointHook, '_save_best_checkpoint', functools.partial(rank_states, best=True)))


def gap_present() -> bool:
    """Whether mmengine's checkpoints lack the random states (read from ``Runner.save_checkpoint``'s source:
    observing it takes a training run)."""
    source = inspect.getsource(Runner.save_checkpoint)
    return not any(name in source for name in ('get_rng_state', 'np.random.get_state', 'random.getstate'))


def is_applied() -> bool:
    """Whether :func:`apply` is in effect."""
    return is_around(Runner, 'resume', __name__)


def apply() -> bool:
    """Make resume exact where mmengine has the gap. Safe to call any number of times.

    Returns:
        bool: True when in effect; False where mmengine saves the random states itself.
    """
    if not is_applied() and gap_present():
        for owner, name, context in AROUND:
            around(owner, name, __name__, context)
    return is_applied()
