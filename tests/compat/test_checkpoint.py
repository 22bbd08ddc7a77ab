"""mmengine checkpoints under torch >= 2.6 (snl_mm.compat.checkpoint): save with the Runner, then resume,
``load_from`` and ``init_recognizer`` load them with ``weights_only`` still on."""
import io
import pickle
import zipfile
from pathlib import Path
from typing import Optional

import pytest
import torch

from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint
from snl_mm.compat import checkpoint as compat_checkpoint
from tests.compat.tiny_runner import TinyNet, state, tiny_runner

pytestmark = pytest.mark.skipif(not hasattr(torch.serialization, 'safe_globals'),
                                reason='torch < 2.5 loads with weights_only=False')


def _runner(work_dir: Path, name: str, max_epochs: int, resume: bool = False,
            load_from: Optional[str] = None) -> Runner:
    return tiny_runner(work_dir, name, train_cfg=dict(by_epoch=True, max_epochs=max_epochs), resume=resume,
                       load_from=load_from)


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> dict:
    """Train 3 epochs straight (reference) and 2 epochs (to resume from)."""
    ref_dir = tmp_path_factory.mktemp('reference')
    ref = _runner(ref_dir, 'reference', max_epochs=3)
    ref.train()
    part_dir = tmp_path_factory.mktemp('partial')
    _runner(part_dir, 'partial', max_epochs=2).train()
    return dict(reference=state(ref), work_dir=part_dir, checkpoint=part_dir / 'epoch_2.pth')


def test_runner_checkpoint_needs_the_fix(trained) -> None:
    """A Runner checkpoint holds MessageHub history: plain ``torch.load`` (weights_only) still refuses it."""
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(trained['checkpoint']))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in names
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(trained['checkpoint'])


def test_resume_continues_training(trained) -> None:
    """``resume=True`` picks up epoch_2.pth and the third epoch ends where uninterrupted training ends."""
    runner = _runner(trained['work_dir'], 'resumed', max_epochs=3, resume=True)
    runner.train()
    assert runner.epoch == 3 and runner.iter == 12
    resumed = state(runner)
    for key, value in trained['reference'].items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)
    history = runner.message_hub.get_scalar('train/loss')
    assert isinstance(history, HistoryBuffer) and len(history.data[0]) > 0


def test_load_from(trained, tmp_path: Path) -> None:
    """``load_from`` loads the weights without resuming the epoch counter."""
    runner = _runner(tmp_path, 'load_from', max_epochs=3, load_from=str(trained['checkpoint']))
    runner.load_or_resume()
    assert runner.epoch == 0
    ckpt = CheckpointLoader.load_checkpoint(str(trained['checkpoint']), map_location='cpu')
    for key, value in ckpt['state_dict'].items():
        assert torch.equal(runner.model.state_dict()[key], value), key
    # and the same file through the functional API used by init_recognizer / init_model
    model = TinyNet()
    load_checkpoint(model, str(trained['checkpoint']), map_location='cpu')
    assert torch.equal(model.fc1.weight, ckpt['state_dict']['fc1.weight'])


def test_init_recognizer_loads_runner_checkpoint(trained, tmp_path: Path, i3d_config) -> None:
    """``mmaction.apis.init_recognizer`` with a checkpoint in the Runner's format (meta + message_hub)."""
    from mmaction.apis import init_recognizer
    from mmaction.registry import MODELS
    from mmengine.registry import DefaultScope

    ckpt = CheckpointLoader.load_checkpoint(str(trained['checkpoint']), map_location='cpu')
    # init_recognizer sets the default scope itself: restore the previous one afterwards
    with DefaultScope.overwrite_default_scope('mmaction'):
        source = MODELS.build(i3d_config.model)
        ckpt['state_dict'] = source.state_dict()
        path = tmp_path / 'i3d_runner_format.pth'
        torch.save(ckpt, path)
        model = init_recognizer(i3d_config, str(path), device='cpu')
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def _rename_globals(src: Path, dst: Path, old: bytes, new: bytes) -> None:
    """Rewrite the pickle's GLOBAL names (``old`` -> ``new``) as another numpy version would write them."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith('data.pkl'):
                data = data.replace(old, new)
            zout.writestr(info, data)


def test_numpy1_checkpoint_names(trained, tmp_path: Path) -> None:
    """Checkpoints written under numpy 1.x name ``numpy.core.multiarray``: they load too."""
    old = tmp_path / 'numpy1.pth'
    _rename_globals(trained['checkpoint'], old, b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert 'numpy.core.multiarray._reconstruct' in torch.serialization.get_unsafe_globals_in_checkpoint(str(old))
    ckpt = CheckpointLoader.load_checkpoint(str(old), map_location='cpu')
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


class _Payload:
    """An object whose unpickling would call a function that is not allowed."""

    def __init__(self, reduce_value) -> None:
        self.reduce_value = reduce_value

    def __reduce__(self):
        return self.reduce_value


@pytest.mark.parametrize('reduce_value,match', [
    ((print, ('not allowed', )), 'Unsupported global: GLOBAL print'),
    ((getattr, (HistoryBuffer, '__init__')), r"getattr\(.*'__init__'\) is not allowed"),
    # pickle names the method through getattr, which resolves it; calling it is still refused
    ((HistoryBuffer.update, ({}, 1.0)), 'call reduce for unrecognized function'),
], ids=['other-global', 'private-attr', 'call-method'])
def test_loader_still_refuses_other_globals(tmp_path: Path, reduce_value, match: str) -> None:
    path = tmp_path / 'untrusted.pth'
    torch.save({'state_dict': {}, 'meta': _Payload(reduce_value)}, path)
    with pytest.raises(pickle.UnpicklingError, match=match):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def test_globals_are_scoped_to_the_loader(trained) -> None:
    before = set(torch.serialization.get_safe_globals())
    CheckpointLoader.load_checkpoint(str(trained['checkpoint']), map_location='cpu')
    assert set(torch.serialization.get_safe_globals()) == before
    with compat_checkpoint.mmengine_checkpoint_globals():
        with compat_checkpoint.mmengine_checkpoint_globals():  # re-entrant
            pass
        ckpt = torch.load(trained['checkpoint'], map_location='cpu')
    assert set(torch.serialization.get_safe_globals()) == before
    assert 'state_dict' in ckpt


def test_history_buffer_getattr() -> None:
    assert compat_checkpoint.history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for obj, name in [(HistoryBuffer, '_set_default_statistics'), (HistoryBuffer, '__class__'), (io, 'open'),
                      (HistoryBuffer, 'data')]:
        with pytest.raises(pickle.UnpicklingError):
            compat_checkpoint.history_buffer_getattr(obj, name)


def test_apply_idempotent() -> None:
    loader = CheckpointLoader.load_checkpoint
    assert compat_checkpoint.apply() and compat_checkpoint.apply()
    assert CheckpointLoader.load_checkpoint.__func__ is loader.__func__
