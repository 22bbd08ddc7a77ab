"""The launchers on this machine's CPUs: tools/dist_train.sh with 2 processes (gloo), --resume, tools/test.py,
tools/dist_test.sh and tools/analysis/attention_map.py, on the demo config with a small generated dataset.
"""
import json
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import matplotlib.image as mpimg
import pytest
import torch

HERE = Path(__file__).resolve().parent
EPOCH_ITERS = 4  # 64 training images, 2 processes x batch 8


def free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def run(cmd: List[str], env: Dict[str, str], cwd: Path, timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}'
    return proc.stdout


def assert_same_state(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f'{key} differs')


@pytest.fixture(scope='module')
def trained(tmp_path_factory, repo_root):
    """Two processes train the demo's SNL config for 2 epochs, then resume it for a third."""
    tmp = tmp_path_factory.mktemp('dist')
    config = tmp / 'demo_small.py'
    config.write_text(
        f"_base_ = '{repo_root}/configs/demo/preresnet20-snl_relation.py'\n"
        "custom_imports = dict(imports=['snl_mm', 'rank_state_dump'], allow_failed_imports=False)\n"
        "train_dataloader = dict(batch_size=8, dataset=dict(num_samples=64))\n"
        "val_dataloader = dict(batch_size=16, dataset=dict(num_samples=32))\n"
        "test_dataloader = val_dataloader\n"
        "train_cfg = dict(max_epochs=2)\n"
        "default_hooks = dict(logger=dict(interval=1))\n"
        "custom_hooks = [dict(type='SyncBuffersHook'), dict(type='RankStateDump')]\n")
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(repo_root), str(HERE)] + [p for p in [env.get('PYTHONPATH')] if p])
    env['PYTHON'] = sys.executable
    env.pop('OMP_NUM_THREADS', None)  # torchrun sets one thread per process itself
    work_dir = tmp / 'work'

    def dist_train(*args: str) -> str:
        env['PORT'] = free_port()
        return run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work_dir), *args], env,
                   repo_root)

    first = dist_train()
    second = dist_train('--resume', '--cfg-options', 'train_cfg.max_epochs=3')
    return dict(config=config, work_dir=work_dir, env=env, first=first, second=second, repo=repo_root)


def test_two_processes_end_identical(trained):
    work_dir = trained['work_dir']
    log = trained['first']
    assert 'Distributed training: True' in log
    assert re.search(r'world_size:\s*2|World size:\s*2|GPU number: 2', log), log[-3000:]
    for epoch in (1, 2, 3):
        rank0 = torch.load(work_dir / f'rank0_epoch{epoch}.pth', weights_only=True)
        rank1 = torch.load(work_dir / f'rank1_epoch{epoch}.pth', weights_only=True)
        assert_same_state(rank0, rank1)
    # they trained: the weights moved between epochs, and the checkpoint holds what the ranks hold
    e1 = torch.load(work_dir / 'rank0_epoch1.pth', weights_only=True)
    e2 = torch.load(work_dir / 'rank0_epoch2.pth', weights_only=True)
    assert not torch.equal(e1['backbone.conv1.weight'], e2['backbone.conv1.weight'])
    ckpt = torch.load(work_dir / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert_same_state(ckpt['state_dict'], e2)
    assert ckpt['meta']['iter'] == 2 * EPOCH_ITERS


def test_resume_continues_from_the_last_checkpoint(trained):
    work_dir, log = trained['work_dir'], trained['second']
    assert re.search(r'resumed epoch: 2, iter: 8', log), log[-3000:]
    assert 'Epoch(train) [3]' in log and 'Epoch(train) [1]' not in log and 'Epoch(train) [2]' not in log
    ckpt = torch.load(work_dir / 'epoch_3.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['epoch'] == 3 and ckpt['meta']['iter'] == 3 * EPOCH_ITERS
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('epoch_3.pth')
    assert_same_state(ckpt['state_dict'], torch.load(work_dir / 'rank1_epoch3.pth', weights_only=True))


def test_test_tools_and_attention_map(trained):
    env, repo, config = trained['env'], trained['repo'], str(trained['config'])
    ckpt = (trained['work_dir'] / 'last_checkpoint').read_text().strip()
    out = trained['work_dir'] / 'eval'

    run([env['PYTHON'], 'tools/test.py', config, ckpt, '--work-dir', str(out), '--out', str(out / 'metrics.json'),
         '--out-item', 'metrics'], dict(env, OMP_NUM_THREADS='1'), repo)
    metrics = json.loads((out / 'metrics.json').read_text())
    assert 0 <= metrics['accuracy/top1'] <= 100

    log = run(['bash', 'tools/dist_test.sh', config, ckpt, '2', '--work-dir', str(out / 'dist'), '--out',
               str(out / 'preds.pkl')], dict(env, PORT=free_port()), repo)
    with open(out / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 32, 'the two processes together predicted every validation image once'
    # the same checkpoint, the same images: one process and two agree
    dist_top1 = float(re.findall(r'accuracy/top1: ([\d.]+)', log)[-1])
    assert dist_top1 == pytest.approx(metrics['accuracy/top1'], abs=1e-4)

    png = out / 'attention.png'
    run([env['PYTHON'], 'tools/analysis/attention_map.py', config, ckpt, '--out', str(png), '--num-images', '2'],
        dict(env, OMP_NUM_THREADS='1'), repo)
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200
