"""A file that is not a readable checkpoint (snl_mm.compat.checkpoint_errors): one error naming the file and
saying why, through ``load_from``, resume from a path (``--resume PATH``), ``init_cfg=dict(type='Pretrained')``
and mmengine's loader; no advice to turn ``weights_only`` off, and crafted pickles still refused."""
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn as nn

import snl_mm.compat  # noqa: F401
from mmengine.model import BaseModule
from mmengine.runner import CheckpointLoader, load_checkpoint
from snl_mm.compat import checkpoint_errors
from snl_mm.compat.checkpoint_errors import UnreadableCheckpointError
from tests.compat.tiny_runner import tiny_runner


class Payload:
    """Unpickling it would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


#: bad file -> what the error says about it
REASONS = {
    'truncated.pth': 'its zip archive is incomplete (8192 bytes',
    'empty.pth': 'the file is empty',
    'text.pth': "neither of torch's checkpoint formats",
    'random.pth': "neither of torch's checkpoint formats",
    'pickle.pth': "neither of torch's checkpoint formats",
    'crafted.pth': 'loading with weights_only refuses (Trying to load unsupported GLOBAL posix.system',
}


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp('bad')
    good = folder / 'good.pth'
    torch.save({'state_dict': {'fc.weight': torch.randn(64, 64)}, 'meta': {}}, good)
    (folder / 'truncated.pth').write_bytes(good.read_bytes()[:8192])
    (folder / 'empty.pth').write_bytes(b'')
    (folder / 'text.pth').write_text('this is not a checkpoint\n')
    (folder / 'random.pth').write_bytes(random.Random(0).randbytes(4096))
    (folder / 'pickle.pth').write_bytes(pickle.dumps({'state_dict': {}}))
    torch.save({'state_dict': {}, 'meta': Payload(folder / 'executed')}, folder / 'crafted.pth')
    return {name: folder / name for name in REASONS}


def _check(error: UnreadableCheckpointError, path: Path) -> None:
    message = str(error)
    assert message.startswith(f'{path} is not a readable checkpoint: ')
    assert REASONS[path.name] in message
    assert 'weights_only=False' not in message and 'set to `False`' not in message
    assert error.__suppress_context__, 'one error, not a chain ending in torch\'s advice'
    assert not (path.parent / 'executed').exists()


@pytest.mark.parametrize('name', list(REASONS))
def test_mmengine_loader(bad_files, name: str) -> None:
    with pytest.raises(UnreadableCheckpointError) as info:
        CheckpointLoader.load_checkpoint(str(bad_files[name]), map_location='cpu')
    _check(info.value, bad_files[name])


@pytest.mark.parametrize('name', list(REASONS))
@pytest.mark.parametrize('route', ['load_from', 'resume', 'init_cfg'])
def test_every_route_to_a_checkpoint(bad_files, tmp_path: Path, name: str, route: str) -> None:
    path = bad_files[name]
    with pytest.raises(UnreadableCheckpointError) as info:
        if route == 'init_cfg':
            module = BaseModule(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
            module.fc = nn.Linear(64, 64)
            module.init_weights()
        else:
            tiny_runner(tmp_path, route, load_from=str(path), resume=route == 'resume').load_or_resume()
    _check(info.value, path)


def test_other_errors_pass_through(bad_files, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='can not be found'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'missing.pth'))
    good = bad_files['empty.pth'].parent / 'good.pth'
    assert 'state_dict' in CheckpointLoader.load_checkpoint(str(good), map_location='cpu')
    load_checkpoint(nn.Module(), str(good), map_location='cpu')
    if not torch.cuda.is_available():  # a device that is not there is not the file's fault
        with pytest.raises(RuntimeError, match='CUDA') as info:
            CheckpointLoader.load_checkpoint(str(good), map_location='cuda')
        assert not isinstance(info.value, UnreadableCheckpointError)


def test_weights_only_refusal_keeps_torch_reason_only() -> None:
    message = ('Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` '
               'argument in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set '
               'to `False` will likely succeed, but it can result in arbitrary code execution. Do it only if you '
               'got the file from a trusted source.\nPlease file an issue with the following so that we can make '
               '`weights_only=True` compatible with your use case: WeightsUnpickler error: Unsupported global: '
               'GLOBAL builtins.print was not an allowed global by default. Please use '
               '`torch.serialization.add_safe_globals([print])` or the '
               '`torch.serialization.safe_globals([print])` context manager to allowlist this global if you '
               'trust this class/function.\n\nCheck the documentation of torch.load to learn more.')
    assert checkpoint_errors.weights_only_refusal(message) == 'Unsupported global: GLOBAL builtins.print'


def test_gap_and_idempotence() -> None:
    loader = CheckpointLoader.load_checkpoint
    assert checkpoint_errors.apply() and checkpoint_errors.apply()
    assert CheckpointLoader.load_checkpoint.__func__ is loader.__func__


def test_train_tool_resume_from_a_bad_file(bad_files, tmp_path: Path, repo_root: Path, subprocess_env) -> None:
    """What a user sees from ``tools/train.py --resume PATH``: one error, the file named, no unsafe advice."""
    path = bad_files['truncated.pth']
    cmd = [sys.executable, 'tools/train.py', 'configs/demo/preresnet20-snl_relation.py', '--work-dir',
           str(tmp_path), '--resume', str(path), '--cfg-options', 'train_dataloader.dataset.num_samples=16',
           'val_dataloader.dataset.num_samples=16']
    proc = subprocess.run(cmd, cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f'snl_mm.compat.checkpoint_errors.UnreadableCheckpointError: {path} is not a readable '
                    f'checkpoint: {REASONS["truncated.pth"]}, no central directory at the end), as a file cut '
                    'short by an interrupted write or copy is.')
    assert 'During handling of the above exception' not in output and 'weights_only' not in output
