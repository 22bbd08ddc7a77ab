# Copyright (c) OpenMMLab. All rights reserved. Adapted for snl_mm.
"""Train a model from an OpenMMLab config (mmpretrain or mmaction2), as OpenMMLab's ``tools/train.py``.

``snl_mm.compat`` is imported before anything else, in every process (torchrun and slurm workers included): it
registers the blocks, backbones and datasets and applies the fixes of mmengine's gaps (gloo on machines without
GPUs, checkpoint loading under torch >= 2.6, crash-safe checkpoints, exact resume, clear errors for files that
are not checkpoints). The rest is mmengine:
``Config.fromfile`` and ``Runner.from_cfg`` (or ``RUNNERS.build`` when the config sets ``runner_type``),
with the registries of the config's ``default_scope``.

Examples::

    python tools/train.py configs/demo/preresnet20-snl_relation.py
    bash tools/dist_train.sh configs/imagenet/resnet50-snl_8xb32-110e_in1k.py 8 --amp
    python tools/train.py CONFIG --resume      # the work dir's newest checkpoint that loads; ends as if not stopped
    python tools/train.py CONFIG --resume work_dirs/x/iter_4000.pth
    python tools/train.py CONFIG --cfg-options model.backbone.plugins.0.cfg.reduction=4
"""
import argparse
import os
import os.path as osp

import snl_mm.compat  # noqa: F401,I001  (registration, and the fixes of mmengine's gaps, before anything is built)
import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.device import get_device
from mmengine.runner import find_latest_checkpoint

from snl_mm.compat.dist import release_process_group
from snl_mm.registry import build_runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (snl_mm, mmpretrain or mmaction2 config)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If a checkpoint path is given, resume from it; if not, resume from the latest checkpoint '
        'in the work directory (the newest that loads, when last_checkpoint is missing, empty or names a bad '
        'file).')
    parser.add_argument('--amp', action='store_true', help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--no-validate', action='store_true', help='do not evaluate the checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual batch size over the config\'s '
        '`auto_scale_lr.base_batch_size`')
    parser.add_argument(
        '--no-pin-memory', action='store_true', help='disable pin_memory in the dataloaders')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='disable persistent_workers in the dataloaders')
    parser.add_argument('--seed', type=int, default=None, help='random seed (when the config sets none)')
    parser.add_argument(
        '--diff-rank-seed', action='store_true', help='use a different seed on every rank')
    parser.add_argument(
        '--deterministic', action='store_true', help='deterministic options for the CUDNN backend')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def set_default_dataloader_cfg(cfg: Config) -> None:
    """mmpretrain's dataloader defaults (pinned memory, persistent workers, ``default_collate``).

    Applied to mmpretrain configs only, as mmpretrain's own ``tools/train.py`` does; pinned memory only
    where CUDA is present and persistent workers only where the loader has workers (torch refuses them
    with ``num_workers=0``).
    """
    if cfg.get('default_scope') != 'mmpretrain':
        return
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field, None) is None:
            continue
        loader = ConfigDict(
            pin_memory=torch.cuda.is_available(),
            persistent_workers=cfg[field].get('num_workers', 0) > 0,
            collate_fn=dict(type='default_collate'))
        loader.update(cfg[field])
        cfg[field] = loader


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command-line arguments into the config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        if get_device() == 'cpu':
            raise ValueError('--amp: mmengine\'s AmpOptimWrapper runs on GPU, NPU, MLU or MUSA devices and this '
                             'machine has none; train without --amp')
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise TypeError(f'--amp: optim_wrapper.type must be OptimWrapper or AmpOptimWrapper, got '
                            f'{optim_wrapper!r}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.resume == 'auto':
        cfg.resume = True
        # resume from the work dir's latest checkpoint; in a fresh work dir keep `load_from` (the pretrained
        # weights of a fine-tuning config) instead of dropping it as a plain `resume=True` would
        if find_latest_checkpoint(cfg.work_dir) is not None or not cfg.get('load_from'):
            cfg.load_from = None
        else:
            cfg.resume = False
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr: the config has no `auto_scale_lr.base_batch_size`')
        cfg.auto_scale_lr.enable = True

    randomness = cfg.get('randomness', None) or ConfigDict(seed=None)
    if args.seed is not None:
        randomness.seed = args.seed
    if args.diff_rank_seed:
        randomness.diff_rank_seed = True
    if args.deterministic:
        randomness.deterministic = True
    cfg.randomness = randomness

    set_default_dataloader_cfg(cfg)
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field, None) is None:
            continue
        if args.no_pin_memory:
            cfg[field]['pin_memory'] = False
        if args.no_persistent_workers:
            cfg[field]['persistent_workers'] = False

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    runner = build_runner(cfg)
    runner.train()
    release_process_group()


if __name__ == '__main__':
    main()
