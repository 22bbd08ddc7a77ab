"""The demo config killed with SIGKILL and resumed with ``--resume``: killed while a ``.pth`` is written, while
``last_checkpoint`` is written, and mid-epoch between checkpoints; on 1 process (``tools/train.py``) and on 2
(``tools/dist_train.sh``, gloo). No partial file is ever left under a checkpoint's name, ``--resume`` continues
from a complete checkpoint, and the run ends bitwise equal to the run that was not killed.

The faults come from ``fault_injection.py`` (imported by the training processes through the config): a write is
held open inside its fsync until the test kills the process, or the process kills itself before an iteration.
The demo config as shipped (RandomFlip included), made tiny by ``--cfg-options``: 48 images, batch 8, an
iteration checkpoint every 4 iterations (1 process: 6 iterations per epoch, 3 epochs).
"""
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest
import torch

import snl_mm.compat  # noqa: F401
from mmengine.runner import CheckpointLoader
from snl_mm.compat import atomic_save

HERE = Path(__file__).resolve().parent
TINY = ['train_dataloader.batch_size=8', 'train_dataloader.dataset.num_samples=48',
        'val_dataloader.batch_size=16', 'val_dataloader.dataset.num_samples=16', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.by_epoch=False', 'default_hooks.checkpoint.interval=4']
TIMEOUT = 600


class Trainer:
    """Runs the demo config's training in a child process, with faults."""

    def __init__(self, tmp: Path, repo: Path, env: Dict[str, str], processes: int) -> None:
        self.tmp, self.repo, self.processes = tmp, repo, processes
        self.config = tmp / 'demo_faults.py'
        self.config.write_text(
            f"_base_ = '{repo}/configs/demo/preresnet20-snl_relation.py'\n"
            "custom_imports = dict(imports=['snl_mm', 'snl_mm.compat', 'fault_injection'], "
            "allow_failed_imports=False)\n"
            "custom_hooks = [dict(type='SyncBuffersHook'), dict(type='KillBeforeIter')]\n")
        self.env = dict(env, PYTHONPATH=os.pathsep.join([str(HERE), env['PYTHONPATH']]), PYTHON=sys.executable)
        self.runs = 0

    def __call__(self, work_dir: Path, *flags: str, cfg: Sequence[str] = (), stall: Optional[str] = None,
                 kill_before: Optional[int] = None) -> subprocess.CompletedProcess:
        """Train with the command-line ``flags`` and ``--cfg-options`` ``cfg``; ``stall``: kill the process while
        the write of that file is held open; ``kill_before``: the process kills itself before that
        iteration."""
        self.runs += 1
        env = dict(self.env)
        marker = self.tmp / f'in_write_{self.runs}'
        if stall:
            env.update(SNL_TEST_STALL_WRITE=stall, SNL_TEST_MARKER=str(marker))
        if kill_before is not None:
            env['SNL_TEST_KILL_BEFORE_ITER'] = str(kill_before)
        args = [str(self.config), '--work-dir', str(work_dir), *flags, '--cfg-options', *TINY, *cfg]
        if self.processes == 1:
            cmd = [sys.executable, 'tools/train.py', *args]
        else:
            env.pop('OMP_NUM_THREADS', None)  # torchrun gives each process one thread
            env['PORT'] = str(_free_port())
            cmd = ['bash', 'tools/dist_train.sh', args[0], str(self.processes), *args[1:]]
        log = self.tmp / f'run_{self.runs}.log'
        with open(log, 'w') as out:
            proc = subprocess.Popen(cmd, cwd=self.repo, env=env, stdout=out, stderr=subprocess.STDOUT)
            if stall:
                deadline = time.monotonic() + TIMEOUT
                while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                proc.kill()  # SIGKILL, inside the write
            returncode = proc.wait(timeout=TIMEOUT)
        assert not stall or marker.exists(), f'the write of {stall} never started:\n{log.read_text()[-4000:]}'
        return subprocess.CompletedProcess(cmd, returncode, log.read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _final(work_dir: Path) -> Dict[str, torch.Tensor]:
    """The state dict of the checkpoint ``last_checkpoint`` names."""
    path = (work_dir / 'last_checkpoint').read_text().strip()
    return CheckpointLoader.load_checkpoint(path, map_location='cpu', logger='silent')['state_dict']


def _snapshot(work_dir: Path) -> Dict[str, object]:
    """What a killed run left: checkpoint names, whether each loads, the pointer, temporary files."""
    loads = {}
    for path in sorted(work_dir.glob('*.pth')):
        try:
            CheckpointLoader.load_checkpoint(str(path), map_location='cpu', logger='silent')
            loads[path.name] = True
        except Exception:  # a partial file under a checkpoint's name: what the test looks for
            loads[path.name] = False
    pointer = work_dir / 'last_checkpoint'
    return dict(loads=loads, pointer=pointer.read_text() if pointer.exists() else None,
                temporary=[p.name for p in work_dir.iterdir() if atomic_save.TEMPORARY_NAME.match(p.name)])


def _assert_equal(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f'{key} differs by {(a[key].double() - b[key].double()).abs().max()}'


def _ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stdout[-6000:]
    return run.stdout


@pytest.fixture(scope='module')
def one_process(tmp_path_factory, repo_root) -> Dict[str, object]:
    """3 epochs of 6 iterations; killed in iter_8.pth's write, then (resumed) in last_checkpoint's, then
    resumed to the end; and the run not killed."""
    tmp = tmp_path_factory.mktemp('crash1')
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(repo_root), os.environ.get('PYTHONPATH')])))
    train = Trainer(tmp, repo_root, env, processes=1)
    options = ['train_cfg.max_epochs=3']
    reference = _ok(train(tmp / 'reference', cfg=options))
    work_dir = tmp / 'killed'
    killed_in_pth = train(work_dir, cfg=options, stall='iter_8.pth')
    after_pth = _snapshot(work_dir)
    killed_in_pointer = train(work_dir, '--resume', cfg=options, stall='last_checkpoint')
    after_pointer = _snapshot(work_dir)
    resumed = _ok(train(work_dir, '--resume', cfg=options))
    return dict(work_dir=work_dir, reference=_final(tmp / 'reference'), reference_log=reference,
                killed=[killed_in_pth, killed_in_pointer], after_pth=after_pth, after_pointer=after_pointer,
                resumed=resumed, final=_final(work_dir))


def test_killed_while_a_checkpoint_is_written(one_process) -> None:
    assert one_process['killed'][0].returncode == -9
    after = one_process['after_pth']
    # iter_8.pth was being written: it is not there under its name, only as the temporary file
    assert after['loads'] == {'iter_4.pth': True}
    assert len(after['temporary']) == 1 and after['temporary'][0].startswith('.iter_8.pth.')
    assert after['pointer'].endswith('iter_4.pth')


def test_killed_while_last_checkpoint_is_written(one_process) -> None:
    assert one_process['killed'][1].returncode == -9
    log = one_process['killed'][1].stdout
    assert 'Auto resumed from the latest checkpoint' in log and 'iter_4.pth' in log
    assert re.search(r'Removed \S+/\.iter_8\.pth\.\d+\.[0-9a-f]{8}\.tmp: the temporary file', log)
    after = one_process['after_pointer']
    # iter_8.pth is complete; last_checkpoint still names iter_4.pth, whole
    assert after['loads'] == {'iter_4.pth': True, 'iter_8.pth': True}
    assert after['pointer'].endswith('iter_4.pth')
    assert len(after['temporary']) == 1 and after['temporary'][0].startswith('.last_checkpoint.')


def test_resumed_run_ends_as_the_run_not_killed(one_process) -> None:
    log = one_process['resumed']
    assert 'resumed epoch: 0, iter: 4' in log
    assert 'loading again the 4 batches of epoch 1' in log
    assert 'Epoch(train) [3][6/6]' in log
    _assert_equal(one_process['final'], one_process['reference'])


def test_two_processes_killed_mid_epoch_resume_exactly(tmp_path: Path, repo_root: Path, subprocess_env) -> None:
    """``dist_train.sh CONFIG 2``: 2 epochs of 3 iterations, a checkpoint every 2; both ranks killed before the
    6th iteration, resumed from iter_4.pth (epoch 2, one batch in)."""
    train = Trainer(tmp_path, repo_root, subprocess_env, processes=2)
    options = ['train_cfg.max_epochs=2', 'default_hooks.checkpoint.interval=2']
    _ok(train(tmp_path / 'reference', cfg=options))
    work_dir = tmp_path / 'killed'
    killed = train(work_dir, cfg=options, kill_before=5)
    assert killed.returncode != 0 and sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_2.pth', 'iter_4.pth']
    log = _ok(train(work_dir, '--resume', cfg=options))
    assert 'resumed epoch: 1, iter: 4' in log and 'loading again the 1 batches of epoch 2' in log
    entry = torch.load(work_dir / 'iter_4.pth', map_location='cpu', weights_only=False)['snl_mm_resume']
    assert entry['world_size'] == 2 and len(entry['ranks']) == 2
    _assert_equal(_final(work_dir), _final(tmp_path / 'reference'))
