"""A hook for tests/tools/test_dist_train.py: every rank saves its model's state dict after each epoch.

Imported by the training processes through ``custom_imports`` (its folder is put on ``PYTHONPATH``).
"""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankStateDump(Hook):
    """Save ``rank{r}_epoch{e}.pth`` (parameters and buffers) in the work dir after every training epoch."""

    priority = 'LOWEST'  # after SyncBuffersHook has averaged the BatchNorm statistics

    def after_train_epoch(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch.save(state, osp.join(runner.work_dir, f'rank{get_rank()}_epoch{runner.epoch + 1}.pth'))
