"""Distributed training on CPU through mmengine's Runner (snl_mm.compat.dist), for real: two processes, gloo.

The worker (``dist_worker.py``) keeps mmengine's defaults that assume GPUs: ``dist_cfg.backend='nccl'``, the
Runner's ``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``, a SyncBN norm and ``sync_bn='torch'``.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from snl_mm.compat import dist as compat_dist

WORKER = Path(__file__).with_name('dist_worker.py')
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 420

pytestmark = pytest.mark.skipif(not compat_dist.cpu_only(), reason='exercises the CPU-only code path')


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    env['OMP_NUM_THREADS'] = '1'
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _check_ranks(work_dir: Path, output: str) -> List[dict]:
    reports = [json.loads((work_dir / f'rank{r}.json').read_text()) for r in range(2)]
    for rank, report in enumerate(reports):
        assert report['rank'] == rank and report['world_size'] == 2
        assert report['backend'] == 'gloo'
        assert report['wrapper'] == 'MMDistributedDataParallel' and report['device_ids'] is None
        # SyncBN (from norm_cfg and from sync_bn='torch') fell back to plain BN
        assert report['norm_types'] == ['_BatchNormXd']
        assert report['changed'] and report['iters'] == 8
    assert 'SyncBatchNorm layers' in output and 'reverted to BatchNorm' in output
    # each rank trained on its own half of the data: equal parameters mean gradients were all-reduced
    p0, p1 = (torch.load(work_dir / f'rank{r}.pt') for r in range(2))
    assert p0.keys() == p1.keys()
    for key in p0:
        assert torch.equal(p0[key], p1[key]), key
    assert (work_dir / 'epoch_2.pth').is_file()
    return reports


def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node=2`` (what tools/dist_train.sh runs) trains a Runner on CPU."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--nproc_per_node=2',
           f'--master_port={_free_port()}', str(WORKER), str(tmp_path), '--launcher', 'pytorch']
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    _check_ranks(tmp_path, output)


def test_slurm_launcher_two_tasks_gloo(tmp_path: Path) -> None:
    """The slurm start (tools/slurm_train.sh) on a CPU node, as two tasks with slurm's environment."""
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = _env()
        env.update(SLURM_PROCID=str(rank), SLURM_NTASKS='2', SLURM_LOCALID=str(rank),
                   SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1', MASTER_PORT=port)
        for key in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'):
            env.pop(key, None)
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), '--launcher', 'slurm'],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=TIMEOUT)
        outputs.append(out)
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
    _check_ranks(tmp_path, ''.join(outputs))


def test_cpu_backend_choice() -> None:
    with pytest.warns(compat_dist.CPUFallbackWarning, match="backend='gloo'"):
        assert compat_dist.cpu_backend('nccl') == 'gloo'
    assert compat_dist.cpu_backend('gloo') == 'gloo'


def test_patches_idempotent() -> None:
    import mmengine.dist.utils as mmengine_dist_utils
    from mmengine.model import MMDistributedDataParallel

    before = (mmengine_dist_utils._init_dist_pytorch, mmengine_dist_utils._init_dist_slurm,
              MMDistributedDataParallel.__init__)
    assert compat_dist.apply() and compat_dist.apply()
    after = (mmengine_dist_utils._init_dist_pytorch, mmengine_dist_utils._init_dist_slurm,
             MMDistributedDataParallel.__init__)
    assert before == after and compat_dist.is_applied()
