"""The CIFAR-100 PreResNet-56 + SNL config of the paper's Tables 2-5 trains through ``tools/dist_train.sh CONFIG 2``
(two processes, gloo on CPUs) on generated files in the CIFAR-100 format, validates as the paper's code does (every
5 epochs, keeping the best top-1 and the best top-5 checkpoints), and ``tools/test.py`` reports both best scores.

The config given to the launcher inherits the row's config and changes only sizes (16 training and 8 test images,
2 images per process, 5 epochs of 4 iterations: 20 iterations) and the data root; the normalisation, the model, the
schedule and the evaluation are the row's, and the dumped config shows the normalisation the run used.
"""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.configs.conftest import write_cifar

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'cifar' / 'preresnet56-snl_8xb16-300e_cifar100.py'
#: the code's CIFAR normalisation (SNL-Classification/train_val.py:295-297), x 255
MEAN, STD = [125.307, 122.961, 113.8575], [51.5865, 50.847, 51.255]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cifar_dist')
    md5 = write_cifar(tmp / 'cifar100', np.random.default_rng(0), 100, num_images=16, num_test=8)
    # the dataset class checks the files against the official archive's md5: give it those of the files written
    (tmp / 'generated_cifar_md5.py').write_text(
        'from mmpretrain.datasets import CIFAR100\n'
        f"CIFAR100.train_list = [['train', {md5['train']!r}]]\n"
        f"CIFAR100.test_list = [['test', {md5['test']!r}]]\n")
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(data_root=str(tmp / 'cifar100')))
    config = tmp / 'preresnet56-snl_tiny.py'
    config.write_text(
        f'_base_ = {str(CONFIG)!r}\n'
        "custom_imports = dict(imports=['snl_mm', 'snl_mm.compat', 'generated_cifar_md5'], "
        'allow_failed_imports=False)\n'
        f'train_dataloader = {loader!r}\nval_dataloader = {dict(loader, batch_size=4)!r}\n'
        'test_dataloader = val_dataloader\n'
        'train_cfg = dict(max_epochs=5)\n'  # 16 images / (2 processes x 2) = 4 iterations an epoch
        'default_hooks = dict(logger=dict(interval=1))\n'
        'randomness = dict(seed=0)\n')
    env = dict(os.environ, PYTHON=sys.executable, MPLBACKEND='Agg')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), str(tmp), env.get('PYTHONPATH')]))
    env.pop('OMP_NUM_THREADS', None)  # torchrun gives each process one thread
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        env['PORT'] = str(s.getsockname()[1])
    work = tmp / 'work'
    train = subprocess.run(['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work)], cwd=REPO,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert train.returncode == 0, train.stdout[-6000:]
    test = subprocess.run([env['PYTHON'], 'tools/test.py', str(config), str(work / 'epoch_5.pth'), '--work-dir',
                           str(tmp / 'test')], cwd=REPO, env=dict(env, OMP_NUM_THREADS='1'),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert test.returncode == 0, test.stdout[-6000:]
    return dict(config=config, work=work, log=train.stdout, test=test.stdout)


def test_trains_20_iterations_in_two_processes_and_validates(run):
    log, work = run['log'], run['work']
    assert 'Distributed training: True' in log
    assert re.search(r'world_size:\s*2|World size:\s*2|GPU number: 2', log), log[-3000:]
    assert 'Epoch(train) [5][4/4]' in log and 'Epoch(train) [6]' not in log
    checkpoint = torch.load(work / 'epoch_5.pth', map_location='cpu', weights_only=False)
    assert checkpoint['meta']['iter'] == 20
    # the validation interval of the paper's code: once, after epoch 5, with top-1 and top-5
    vals = re.findall(r'Epoch\(val\) \[(\d+)\].*accuracy/top1: ([\d.]+)\s+accuracy/top5: ([\d.]+)', log)
    assert [v[0] for v in vals] == ['5'], vals
    top1, top5 = float(vals[0][1]), float(vals[0][2])
    # the best top-1 and the best top-5, each kept with its checkpoint and its score in the run's message hub
    assert (work / 'best_accuracy_top1_epoch_5.pth').is_file() and (work / 'best_accuracy_top5_epoch_5.pth').is_file()
    best = checkpoint['message_hub']['runtime_info']
    assert best['best_score_accuracy/top1'] == pytest.approx(top1, abs=1e-4)
    assert best['best_score_accuracy/top5'] == pytest.approx(top5, abs=1e-4)
    # the block trained: it started at the released PreResNet's norm weight 1 and moved
    norm = checkpoint['state_dict']['backbone.layer1.1.snl_block.norm.weight']
    assert torch.isfinite(norm).all() and not torch.equal(norm, torch.ones_like(norm))


def test_dumped_config_shows_the_codes_normalisation(run):
    dumped = run['work'] / run['config'].name
    text = dumped.read_text()
    assert '125.307' in text and '51.5865' in text
    cfg = Config.fromfile(str(dumped), import_custom_modules=False)
    assert list(cfg.data_preprocessor.mean) == MEAN and list(cfg.data_preprocessor.std) == STD
    assert cfg.train_cfg.val_interval == 5 and list(cfg.default_hooks.checkpoint.save_best) == [
        'accuracy/top1', 'accuracy/top5']


def test_test_tool_reports_both_best_scores(run):
    best = torch.load(run['work'] / 'epoch_5.pth', map_location='cpu',
                      weights_only=False)['message_hub']['runtime_info']
    line = next(line for line in run['test'].splitlines() if 'Best scores of the training run' in line)
    assert f"accuracy/top1: {best['best_score_accuracy/top1']:.4f}" in line
    assert f"accuracy/top5: {best['best_score_accuracy/top5']:.4f}" in line
    assert re.search(r'Epoch\(test\).*accuracy/top1: [\d.]+\s+accuracy/top5: [\d.]+', run['test'])
