"""A tiny mmengine Runner for the tests of the checkpoint and resume fixes: a 4-feature classifier, a fixed
dataset whose reads can draw random noise, and a validation metric.

``tiny_runner`` builds a Runner with mmengine's own hooks and loops; keyword arguments override its settings.
"""
import os
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.model import BaseModel
from mmengine.runner import Runner


class TinyNet(BaseModel):
    """Linear -> BN -> ReLU -> Dropout(p) -> Linear over 4 features."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.fc2(self.drop(F.relu(self.bn(self.fc1(torch.stack(inputs))))))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, torch.stack(labels)))
        if mode == 'predict':
            return list(logits)
        return logits


class TinyData(Dataset):
    """``size`` fixed samples; with ``augment``, each read adds noise from numpy's, Python's and torch's global
    generators and flips the sign with probability 1/2 drawn from numpy (as mmcv's ``RandomFlip`` draws)."""

    def __init__(self, size: int = 16, augment: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if self.augment:
            noise = np.random.rand() + random.random() + torch.rand(()).item()
            x = x * (-1.0 if np.random.rand() < 0.5 else 1.0) + 0.1 * noise
        return dict(inputs=x, labels=self.y[i])


class SampleCount(BaseMetric):
    """Counts the validation samples (a validation loader draws from torch's generator when it starts)."""

    def process(self, data_batch, data_samples) -> None:
        self.results.append(len(data_samples))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        return dict(samples=float(sum(results)))


def tiny_runner(work_dir: Path, name: str, dropout: float = 0.0, size: int = 16, augment: bool = False,
                **overrides: Any) -> Runner:
    """A Runner training :class:`TinyNet` on :class:`TinyData` (batch 4, SGD, 3 epochs, a checkpoint every
    epoch, seed 0); ``overrides`` replace any of the Runner's arguments."""
    torch.manual_seed(0)  # the model is built before the Runner seeds anything
    settings: Dict[str, Any] = dict(
        model=TinyNet(dropout),
        work_dir=str(work_dir),
        experiment_name=f'{name}_{os.getpid()}_{id(work_dir)}_{random.getrandbits(32)}',
        train_dataloader=dict(dataset=TinyData(size, augment), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        # `end` given: otherwise mmengine cuts the schedule at this run's max_epochs and stores that cut
        param_scheduler=dict(type='MultiStepLR', milestones=[2], gamma=0.1, by_epoch=True, end=3),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
    )
    settings.update(overrides)
    return Runner(**settings)


def validation(size: int = 16) -> Dict[str, Any]:
    """Runner arguments for a validation loop over :class:`TinyData` after every epoch."""
    return dict(val_dataloader=dict(dataset=TinyData(size), batch_size=8, num_workers=0,
                                    sampler=dict(type='DefaultSampler', shuffle=False)),
                val_evaluator=Evaluator([SampleCount()]), val_cfg=dict())


def state(runner: Runner) -> Dict[str, torch.Tensor]:
    """A copy of the runner's model state dict."""
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
