"""The fixes act only in the situations they fix: ``Runner.val()`` and ``Runner.test()`` alone (no ``train()``
before) work as mmengine's do, with its default hooks; a Runner registers mmengine's hooks only, and one that trains
gets ``ExactResumeHook`` when ``train()`` starts."""
import snl_mm.compat  # noqa: F401
from mmengine.evaluator import Evaluator
from snl_mm.compat.exact_resume import ExactResumeHook
from tests.compat.tiny_runner import SampleCount, tiny_runner, validation

MMENGINE_DEFAULT_HOOKS = ['RuntimeInfoHook', 'IterTimerHook', 'DistSamplerSeedHook', 'LoggerHook', 'ParamSchedulerHook',
                          'CheckpointHook']


def _runner(tmp_path, **overrides):
    loops = validation(size=8)
    loops.update(test_dataloader=loops['val_dataloader'], test_evaluator=Evaluator([SampleCount()]), test_cfg=dict())
    return tiny_runner(tmp_path, 'alone', default_hooks=None, **loops, **overrides)


def test_val_and_test_alone_with_the_default_hooks(tmp_path):
    runner = _runner(tmp_path)
    assert [type(h).__name__ for h in runner.hooks] == MMENGINE_DEFAULT_HOOKS
    assert runner.val() == dict(samples=8.0)
    assert runner.test() == dict(samples=8.0)
    assert [type(h).__name__ for h in runner.hooks] == MMENGINE_DEFAULT_HOOKS
    assert not list(tmp_path.rglob('*.pth'))  # nothing saved, nothing removed


def test_a_training_runner_gets_the_resume_hook(tmp_path):
    runner = _runner(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=1, val_interval=1))
    runner.train()
    assert sum(isinstance(h, ExactResumeHook) for h in runner.hooks) == 1
    assert [type(h).__name__ for h in runner.hooks if not isinstance(h, ExactResumeHook)] == MMENGINE_DEFAULT_HOOKS
    assert runner.val() == dict(samples=8.0) and runner.test() == dict(samples=8.0)
