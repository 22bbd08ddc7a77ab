"""Worker for ``test_dist.py``: a tiny mmengine Runner training run started by torchrun or as a slurm task.

Usage: ``python -m torch.distributed.run --nproc_per_node=2 dist_worker.py WORK_DIR [--launcher pytorch]``.
The model normalises with ``SyncBN`` and the config sets ``sync_bn='torch'`` and the default
``dist_cfg=dict(backend='nccl')``: on a machine without GPUs all three must be handled by snl_mm.compat.dist.
Each rank writes ``rank<r>.pt`` (parameters after training) and ``rank<r>.json`` (what it observed).
"""
import argparse
import json
import os.path as osp

import torch
import torch.nn as nn
import torch.nn.functional as F

import snl_mm.compat  # noqa: F401  (applies the fixes of mmengine's gaps in this worker process)
from mmcv.cnn import build_norm_layer
from mmengine.config import Config
from mmengine.dist import get_dist_info
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner
from torch.utils.data import Dataset


@MODELS.register_module(force=True)
class TinyDistNet(BaseModel):
    """Linear -> norm -> ReLU -> Linear classifier over 4 features."""

    def __init__(self, norm_cfg: dict) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.norm = build_norm_layer(norm_cfg, 8)[1]
        self.fc2 = nn.Linear(8, 2)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.fc2(F.relu(self.norm(self.fc1(torch.stack(inputs)))))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, torch.stack(labels)))
        return logits


@DATASETS.register_module(force=True)
class TinyDistDataset(Dataset):
    """32 fixed random samples; DefaultSampler gives each rank a different half."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('work_dir')
    parser.add_argument('--launcher', default='pytorch')
    args = parser.parse_args()
    cfg = Config(dict(
        model=dict(type='TinyDistNet', norm_cfg=dict(type='SyncBN')),
        work_dir=args.work_dir,
        experiment_name='tiny_dist',
        train_dataloader=dict(dataset=dict(type='TinyDistDataset'), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2)),
        env_cfg=dict(dist_cfg=dict(backend='nccl')),
        sync_bn='torch',
        launcher=args.launcher,
        randomness=dict(seed=0),
    ))
    runner = Runner.from_cfg(cfg)
    initial = {k: v.detach().clone() for k, v in runner.model.module.named_parameters()}
    runner.train()
    rank, world_size = get_dist_info()
    model = runner.model
    module = model.module
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    torch.save(params, osp.join(args.work_dir, f'rank{rank}.pt'))
    report = dict(
        rank=rank,
        world_size=world_size,
        backend=torch.distributed.get_backend(),
        wrapper=type(model).__name__,
        device_ids=model.device_ids,
        norm_types=sorted({type(m).__name__ for m in module.modules()
                           if isinstance(m, nn.modules.batchnorm._NormBase)}),
        changed=any(not torch.equal(initial[k], params[k]) for k in params),
        iters=runner.iter,
    )
    with open(osp.join(args.work_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(report, f)


if __name__ == '__main__':
    main()
