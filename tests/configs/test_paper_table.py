"""Every reproduction config against the paper and its released code, row by row of Tables 2-8.

For each row the config is resolved with mmengine's ``Config.fromfile`` and compared with the values written in
this file (their sources are the table of ``docs/reproducing.md``):

* data: the dataset class, its root or split files, ``num_classes``, the normalisation mean / std, every transform
  of the train / val / test pipelines (crop and resize sizes, the UCF-101 clip sampling: ``clip_len``,
  ``frame_interval``, ``num_clips``, the test crops);
* training: the per-GPU batch and the number of GPUs the config's name assumes, optimiser, learning rate, warm-up,
  milestones, epochs, gradient clipping, the validation interval and the rule that keeps the checkpoint whose
  accuracy is reported (best top-1, and best top-5 apart);
* network: the backbone's arguments (depth, stem, projection, ``zero_init_residual``, ``final_conv``, its
  initialisation), the dropout before the classifier, the head's classes;
* block: the config's block entry, its resolved arguments with the class defaults the config does not write
  (``bias``, ``act_cfg``, the norm, the scale, ``init_cfg``), and the built block: where it is in the backbone
  (``model.backbone.plugin_paths``), whether its convolutions have biases, its activation, its norm, its affinity,
  and how it starts (the identity, or the released PreResNet's norm weight 1).

The schedules are also run: mmengine's schedulers, built from each config, give per epoch the learning rate that
the paper's training script (zh460045050/SNL_ICCV2021, ``SNL-Classification/train_val.py``) sets, re-implemented
here from it: ``lrs = linspace(lr * 0.1^len(drops), lr, 10)`` for the 10 warm-up epochs, then ``lr / 10`` at each
epoch ``drop + 10``. And the blocks of the rows are checked against float64 re-implementations of the code's units.
"""
import inspect
import re
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim.scheduler import _ParamScheduler
from mmengine.registry import MODELS, PARAM_SCHEDULERS, DefaultScope

from tests.helpers import randomise_, rel_err

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'

# ---------------------------------------------------------------------------------------------------------------
# Schedules (Sec. 3.1, Sec. 3.2, Appendix C.1; the training script where it differs). warm-up: (epochs, start
# factor); milestones: epochs after the warm-up; epochs: all, warm-up included; batch: auto_scale_lr's base.
# ---------------------------------------------------------------------------------------------------------------
SCHEDULES = {
    'cifar': dict(lr=0.1, momentum=0.9, weight_decay=1e-4, warmup=(10, 0.01), milestones=(150, 250), epochs=310,
                  batch=128),
    'imagenet': dict(lr=0.01, momentum=0.9, weight_decay=1e-4, warmup=(10, 0.001), milestones=(31, 61, 81),
                     epochs=110, batch=100),
    # the paper's sentence (the script has no CUB branch): lr 0.1, / 10 at 31, 61, 81, 110 epochs, no warm-up
    'cub': dict(lr=0.1, momentum=0.9, weight_decay=1e-4, warmup=None, milestones=(31, 61, 81), epochs=110,
                batch=64),
    'ucf101': dict(lr=0.01, momentum=0.9, weight_decay=1e-4, warmup=None, milestones=(40, 80), epochs=100,
                   batch=64),
}
#: per task: (GPUs, images per GPU) the config's name (``8xb16``) assumes, metric prefix, checkpoint interval
TRAINING = {'cifar': ((8, 16), 'accuracy', 1), 'imagenet': ((8, 32), 'accuracy', 1), 'cub': ((8, 8), 'accuracy', 1),
            'ucf101': ((8, 8), 'acc', 5)}

# ---------------------------------------------------------------------------------------------------------------
# Data. Normalisation: the code normalises CIFAR-10 and CIFAR-100 with the CIFAR-10 statistics
# (train_val.py:274-276, 295-297), ImageNet and CUB with ImageNet's (:238-240).
# ---------------------------------------------------------------------------------------------------------------
CIFAR10_MEAN, CIFAR10_STD = [125.307, 122.961, 113.8575], [51.5865, 50.847, 51.255]
IMAGENET_MEAN, IMAGENET_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
CIFAR_TRAIN = [dict(type='RandomCrop', crop_size=32, padding=4),
               dict(type='RandomFlip', prob=0.5, direction='horizontal'), dict(type='PackInputs')]
CIFAR_TEST = [dict(type='PackInputs')]


def _image_pipelines(crop: int, test_edge: int) -> Tuple[list, list]:
    train = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=crop, crop_ratio_range=(0.08, 1.25)),
             dict(type='RandomFlip', prob=0.5, direction='horizontal'), dict(type='PackInputs')]
    test = [dict(type='LoadImageFromFile'), dict(type='ResizeEdge', scale=test_edge, edge='short'),
            dict(type='CenterCrop', crop_size=crop), dict(type='PackInputs')]
    return train, test


def _video_pipelines(clip: Tuple[int, int], train_crop: list, val_crop: list, test_clips: int,
                     test_crop: list) -> Tuple[list, list, list]:
    clip_len, interval = clip
    decode = [dict(type='DecordInit', io_backend='disk')]

    def sample(num_clips, test_mode):
        args = dict(type='SampleFrames', clip_len=clip_len, frame_interval=interval, num_clips=num_clips)
        return [dict(args, test_mode=True) if test_mode else args, dict(type='DecordDecode')]

    pack = [dict(type='FormatShape', input_format='NCTHW'), dict(type='PackActionInputs')]
    return (decode + sample(1, False) + train_crop + pack, decode + sample(1, True) + val_crop + pack,
            decode + sample(test_clips, True) + test_crop + pack)


IN1K_TRAIN, IN1K_TEST = _image_pipelines(224, 256)
CUB_TRAIN, CUB_TEST = _image_pipelines(448, 512)
R3D = _video_pipelines(
    (16, 1),
    [dict(type='Resize', scale=(-1, 128)), dict(type='RandomCrop', size=112), dict(type='Flip', flip_ratio=0.5)],
    [dict(type='Resize', scale=(-1, 128)), dict(type='CenterCrop', crop_size=112)], 10,
    [dict(type='Resize', scale=(-1, 128)), dict(type='CenterCrop', crop_size=112)])
R2PLUS1D = _video_pipelines(
    (8, 8), [dict(type='Resize', scale=(-1, 256)), dict(type='RandomResizedCrop'),
             dict(type='Resize', scale=(224, 224), keep_ratio=False), dict(type='Flip', flip_ratio=0.5)],
    [dict(type='Resize', scale=(-1, 256)), dict(type='CenterCrop', crop_size=224)], 10,
    [dict(type='Resize', scale=(-1, 256)), dict(type='ThreeCrop', crop_size=256)])
TIMESFORMER = _video_pipelines(
    (8, 32), [dict(type='RandomRescale', scale_range=(256, 320)), dict(type='RandomCrop', size=224),
              dict(type='Flip', flip_ratio=0.5)],
    [dict(type='Resize', scale=(-1, 256)), dict(type='CenterCrop', crop_size=224)], 1,
    [dict(type='Resize', scale=(-1, 224)), dict(type='ThreeCrop', crop_size=224)])
UCF_LISTS = dict(ann_file_train='data/ucf101/ucf101_train_split_1_videos.txt',
                 ann_file_val='data/ucf101/ucf101_val_split_1_videos.txt', root='data/ucf101/videos')

#: dataset class, where it reads (root or lists), classes, mean, std, to_rgb, train / val / test pipelines
DATA = {
    'cifar10': dict(dataset='CIFAR10', root='data/cifar10', splits=('train', 'test', 'test'), classes=10,
                    mean=CIFAR10_MEAN, std=CIFAR10_STD, to_rgb=False, pipelines=(CIFAR_TRAIN, CIFAR_TEST, CIFAR_TEST)),
    'cifar100': dict(dataset='CIFAR100', root='data/cifar100', splits=('train', 'test', 'test'), classes=100,
                     mean=CIFAR10_MEAN, std=CIFAR10_STD, to_rgb=False, pipelines=(CIFAR_TRAIN, CIFAR_TEST, CIFAR_TEST)),
    'imagenet': dict(dataset='ImageNet', root='data/imagenet', splits=('train', 'val', 'val'), classes=1000,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, to_rgb=True, pipelines=(IN1K_TRAIN, IN1K_TEST, IN1K_TEST)),
    'cub': dict(dataset='CUB', root='data/CUB_200_2011', splits=('train', 'test', 'test'), classes=200,
                mean=IMAGENET_MEAN, std=IMAGENET_STD, to_rgb=True, pipelines=(CUB_TRAIN, CUB_TEST, CUB_TEST)),
    'ucf101_r3d': dict(dataset='VideoDataset', classes=101, mean=IMAGENET_MEAN, std=IMAGENET_STD, pipelines=R3D),
    'ucf101_r2plus1d': dict(dataset='VideoDataset', classes=101, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                            pipelines=R2PLUS1D),
    'ucf101_timesformer': dict(dataset='VideoDataset', classes=101, mean=[127.5] * 3, std=[127.5] * 3,
                               pipelines=TIMESFORMER),
}

#: initialisation: 'scratch', or the checkpoint a config starts from (its file name)
SCRATCH = 'scratch'
IMAGENET = 'resnet50_8xb32_in1k_20210831-ea4938fc.pth'
HARA_K400 = 'r3d50_hara_kinetics400.pth'
R2PLUS1D_K400 = 'r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb_20220812-47cfe041.pth'
TIMESFORMER_K400 = 'timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb_20220815-a4d0d01f.pth'

# ---------------------------------------------------------------------------------------------------------------
# Networks: the backbone arguments that decide what is trained, the dropout before the classifier and the
# initialisation. PyTorch's default for convolutions and linear layers is kaiming_uniform(a=sqrt(5)).
# ---------------------------------------------------------------------------------------------------------------
PYTORCH_DEFAULT = dict(type='Kaiming', a=5**0.5, mode='fan_in', nonlinearity='leaky_relu', distribution='uniform')
NETS = {
    # the released PreResNet: 27 bottleneck units, projections conv + BN, a final 1x1 convolution, no init loop
    'preresnet56': dict(
        backbone=dict(type='snl_mm.PreResNet', depth=56, projection='conv_bn', final_conv=True, stem_channels=16,
                      init_cfg=[dict(PYTORCH_DEFAULT, layer=['Conv2d']),
                                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]),
        dropout=0.5, head_init=dict(PYTORCH_DEFAULT, layer='Linear'), units=(9, 9, 9), stem=(3, 1)),
    # resnet_snl.py with the CIFAR stem of train_val.py:338-341; every BN weight 1 (no zero_init_residual)
    'resnet50_cifar': dict(
        backbone=dict(type='snl_mm.ResNet_CIFAR', depth=50, zero_init_residual=False, deep_stem=False,
                      init_cfg=[dict(type='Kaiming', layer=['Conv2d'],
                                     override=dict(PYTORCH_DEFAULT, name='conv1')),
                                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]),
        dropout=0.5, head_init=dict(type='Kaiming', layer='Linear', mode='fan_out', nonlinearity='relu'),
        units=(3, 4, 6, 3), stem=(3, 1)),
    'resnet50_in1k': dict(
        backbone=dict(type='ResNet', depth=50, zero_init_residual=False, deep_stem=False),
        dropout=0.5, head_init=dict(PYTORCH_DEFAULT, layer='Linear'), units=(3, 4, 6, 3), stem=(7, 2)),
    # from ImageNet weights: the checkpoint sets every BN (zero_init_residual has no effect)
    'resnet50_cub': dict(
        backbone=dict(type='ResNet', depth=50, deep_stem=False,
                      init_cfg=dict(type='Pretrained', checkpoint=f'checkpoints/{IMAGENET}', prefix='backbone')),
        dropout=0.5, head_init=dict(type='Kaiming', layer='Linear', mode='fan_out', nonlinearity='relu'),
        units=(3, 4, 6, 3), stem=(7, 2)),
    # Hara et al.'s 3D ResNet-50 (full 3x3x3 kernels, a 7x7x7 stem)
    'r3d50': dict(
        backbone=dict(type='ResNet3d', depth=50, conv1_kernel=(7, 7, 7), conv1_stride_t=1, pool1_stride_t=2,
                      with_pool2=False, inflate=(1, 1, 1, 1), inflate_style='3x3x3', spatial_strides=(1, 2, 2, 2),
                      temporal_strides=(1, 2, 2, 2), pretrained=None, pretrained2d=False),
        dropout=0.5, units=(3, 4, 6, 3)),
    'r2plus1d_r34': dict(backbone=dict(type='ResNet2Plus1d', depth=34, pretrained=None), dropout=0.5,
                         units=(3, 4, 6, 3)),
    'timesformer': dict(
        backbone=dict(type='TimeSformer', num_frames=8, img_size=224, patch_size=16, embed_dims=768,
                      attention_type='divided_space_time', pretrained=None),
        dropout=None),
}

# ---------------------------------------------------------------------------------------------------------------
# Blocks: the config's entry, exactly.
# ---------------------------------------------------------------------------------------------------------------
BLOCKS = {
    'nl': dict(type='NLBlock', reduction=2, use_scale=False, bias=False),
    # Wang et al.'s own NL (Table 6 quotes it): scaled, biases in theta, phi, g (video-nonlocal-net NO_BIAS = 0)
    'nl_wang': dict(type='NLBlock', reduction=2, use_scale=True, bias=True),
    'ns': dict(type='NSBlock', reduction=2, bias=False),
    'a2': dict(type='GraphNonlocalBlock', reduction=2,
               affinity=dict(kernel='relu_dot', symmetrize=False, normalize='none'),
               graph_filter=dict(order=2, terms=(1, ))),
    'a2_double_attention': dict(type='A2Block', reduction=2),
    'cgnl': dict(type='CGNLBlock', reduction=2, groups=1, kernel='gaussian', order=2),
    'cgnlx_g8': dict(type='CGNLBlock', reduction=2, groups=8, kernel='gaussian', order=3),
    'snl': dict(type='SNLBlock', reduction=2),
}
#: how the released PreResNet starts its blocks (configs/_base_/blocks.py): norm weight 1, then a ReLU (NL, NS,
#: A2, SNL units) or nothing (CGNL)
RELEASED_INIT = dict(init_cfg=dict(type='Constant', val=1, bias=0, layer=['_BatchNorm', 'GroupNorm']))
RELEASED_UNIT = dict(RELEASED_INIT, act_cfg=dict(type='ReLU'))
PRERESNET_START = {'nl': RELEASED_UNIT, 'ns': RELEASED_UNIT, 'a2': RELEASED_UNIT, 'cgnl': RELEASED_INIT,
                   'snl': RELEASED_UNIT}
#: the class defaults a row's block takes without writing them (resolved from the class's signature)
DEFAULTS = {
    'NLBlock': dict(inner_channels=None, mode='embedded_gaussian', sub_sample=False, conv_cfg=None,
                    norm_cfg=dict(type='BN'), act_cfg=None, init_cfg=None),
    'NSBlock': dict(inner_channels=None, num_units=1, use_scale=False, conv_cfg=None, norm_cfg=dict(type='BN'),
                    act_cfg=None, init_cfg=None),
    'GraphNonlocalBlock': dict(inner_channels=None, num_units=1, bias=False, conv_cfg=None,
                               norm_cfg=dict(type='BN'), act_cfg=None, init_cfg=None),
    'CGNLBlock': dict(inner_channels=None, gamma=1e-4, use_scale=False, bias=False, conv_cfg=None,
                      norm_cfg=dict(type='GN'), act_cfg=None, init_cfg=None),
    'SNLBlock': dict(inner_channels=None, order=2, num_units=1, path='auto', bias=False, conv_cfg=None,
                     norm_cfg=dict(type='BN'), act_cfg=None, init_cfg=None),
    'A2Block': dict(inner_channels=None, num_descriptors=None, bias=True, conv_cfg=None, norm_cfg=dict(type='BN'),
                    act_cfg=None, init_cfg=None),
}
#: the affinity each block computes, as built (``block.graph.config``; the scale of NL and NS included)
AFFINITIES = {
    'NLBlock': dict(kernel='exp_dot', symmetrize=False, normalize='random_walk'),
    'NSBlock': dict(kernel='exp_dot', symmetrize=False, normalize='random_walk', scale=1.0),
    'GraphNonlocalBlock': dict(kernel='relu_dot', symmetrize=False, normalize='none', scale=1.0),
    'SNLBlock': dict(kernel='relu_dot', symmetrize=True, normalize='symmetric', scale=1.0),
}
ABBR = {'NLBlock': 'nl_block', 'NSBlock': 'ns_block', 'GraphNonlocalBlock': 'graph_nonlocal', 'A2Block': 'a2_block',
        'CGNLBlock': 'cgnl_block', 'SNLBlock': 'snl_block'}

# where the blocks are: (stage, unit after which the block runs) in the built backbone, or replaced module paths
RES1_AFTER_SECOND = [('layer1', 1)]            # PreResNet-56: right after the second unit of res1 (Sec. 3.1)
RES4_BEFORE_LAST = [('layer3', -2)]            # ResNet-50 / 3D ResNet-50: right before the last unit of res4
RES3_BEFORE_LAST = [('layer2', -2)]            # R(2+1)D: right before the last unit of res3 (Appendix C.1)
STAGE2, STAGE3 = [('layer2', 1)], [('layer3', 1)]
X3 = [('layer1', 1), ('layer2', 1), ('layer3', 1)]
#: TimeSformer: the attention across frames of every layer (VTN's self-attention relates the frames)
TIMESFORMER_TEMPORAL = [f'transformer_layers.layers.{i}.attentions.0' for i in range(12)]


def _row(table: str, row: str, paper: str, config: str, task: str, data: str, net: str, block: Optional[dict],
         where, init: str = SCRATCH) -> tuple:
    return pytest.param(config, task, data, net, block, where, init, paper, id=f'{table}:{row}')


def _block(name: str, reduction: int = 2, start: Optional[dict] = None) -> dict:
    return dict(BLOCKS[name], **(start or {}), reduction=reduction)


PRN = 'cifar/preresnet56{}_8xb16-300e_cifar100.py'
ABL = 'cifar/ablation/preresnet56-{}-{}_8xb16-300e_cifar100.py'
R50C = 'cifar/resnet50{}_8xb16-300e_cifar{}.py'
IN1K = 'imagenet/resnet50{}_8xb32-110e_in1k.py'
CUB = 'cub/resnet50{}_8xb8-110e_cub.py'
R3D50 = 'ucf101/r3d50{}_k400-pretrained_8xb8-16x1x1-100e_ucf101-split1-rgb.py'
ROW_LABEL = {'nl': 'NL', 'ns': 'NS', 'a2': 'A2', 'cgnl': 'CGNL', 'snl': 'Ours'}
#: the paper's numbers (top-1 / top-5 where given), as the README's tables print them
T2 = {'nl': ('75.29 / 94.07', '75.31 / 92.84', '75.50 / 93.75'),
      'ns': ('75.39 / 93.00', '75.83 / 93.87', '75.61 / 93.66'),
      'a2': ('75.51 / 92.90', '75.58 / 94.27', '75.61 / 93.61'),
      'cgnl': ('74.71 / 93.60', '75.75 / 93.74', '75.27 / 93.05'),
      'snl': ('76.34 / 94.48', '76.41 / 94.38', '76.02 / 94.08')}
T3 = {'nl': ('75.64 / 93.79', '75.28 / 93.93'), 'ns': ('75.74 / 94.02', '75.44 / 93.86'),
      'a2': ('75.60 / 93.82', '75.21 / 93.65'), 'cgnl': ('74.54 / 92.65', '74.90 / 92.46'),
      'snl': ('76.29 / 94.27', '75.68 / 93.90')}
T4 = {'nl': '74.34 / 93.11', 'ns': '75.00 / 93.57', 'a2': '75.63 / 94.12', 'cgnl': '75.96 / 93.10',
      'snl': '76.70 / 93.94'}
T5 = {None: ('94.94 / 99.87', '76.50 / 93.14'), 'nl': ('94.01 / 99.82', '76.77 / 93.55'),
      'ns': ('95.15 / 99.88', '77.90 / 94.34'), 'a2': ('94.41 / 99.83', '77.30 / 93.40'),
      'cgnl': ('94.49 / 99.92', '74.88 / 92.56'), 'snl': ('95.32 / 99.94', '78.17 / 94.17')}
#: Table 6: top-1, config suffix, block (the rows other than SNL are quoted by the paper from their own papers)
T6 = {None: ('76.15', '', None), 'nl': ('76.70', '-nl', 'nl_wang'),
      'a2': ('77.00', '-a2-double-attention', 'a2_double_attention'), 'cgnl': ('77.32', '-cgnlx-g8', 'cgnlx_g8'),
      'snl': ('78.11', '-snl', 'snl')}
T7 = {None: ('85.43', '81.57'), 'nl': ('85.34', '82.88'), 'ns': ('85.54', '82.50'), 'a2': ('85.91', '82.68'),
      'cgnl': ('86.14', '83.38'), 'snl': ('86.02', '84.39')}

ROWS = [_row('T2-5', 'PreResNet56', '75.33 / 93.97', PRN.format(''), 'cifar', 'cifar100', 'preresnet56', None, [])]
for b in ('nl', 'ns', 'a2', 'cgnl', 'snl'):
    start, label = PRERESNET_START[b], ROW_LABEL[b]

    def prn(table, row, paper, config, reduction=2, where=RES1_AFTER_SECOND):
        return _row(table, row, paper, config, 'cifar', 'cifar100', 'preresnet56', _block(b, reduction, start), where)

    ROWS += [
        prn('T2', f'{label} C', T2[b][0], ABL.format(b, 'r1'), reduction=1),
        prn('T2-5', f'{label} C/2', T2[b][1], PRN.format(f'-{b}')),
        prn('T2', f'{label} C/4', T2[b][2], ABL.format(b, 'r4'), reduction=4),
        prn('T3', f'{label} stage 2', T3[b][0], ABL.format(b, 'stage2'), where=STAGE2),
        prn('T3', f'{label} stage 3', T3[b][1], ABL.format(b, 'stage3'), where=STAGE3),
        prn('T4', f'{label} x3', T4[b], ABL.format(b, 'x3'), where=X3),
    ]
for b, (c10, c100) in T5.items():
    suffix, label, where = ('', 'backbone', []) if b is None else (f'-{b}', ROW_LABEL[b], RES4_BEFORE_LAST)
    block = None if b is None else _block(b)
    ROWS += [_row('T5', f'CIFAR-10 ResNet50 {label}', c10, R50C.format(suffix, 10), 'cifar', 'cifar10',
                  'resnet50_cifar', block, where),
             _row('T5', f'CIFAR-100 ResNet50 {label}', c100, R50C.format(suffix, 100), 'cifar', 'cifar100',
                  'resnet50_cifar', block, where)]
for b, (top1, suffix, name) in T6.items():
    label, where = ('ResNet50', []) if b is None else (ROW_LABEL[b], RES4_BEFORE_LAST)
    ROWS.append(_row('T6', label, top1, IN1K.format(suffix), 'imagenet', 'imagenet', 'resnet50_in1k',
                     None if name is None else _block(name), where))
for b, (cub, ucf) in T7.items():
    suffix, label, where = ('', 'backbone', []) if b is None else (f'-{b}', ROW_LABEL[b], RES4_BEFORE_LAST)
    block = None if b is None else _block(b)
    ROWS += [_row('T7', f'CUB {label}', cub, CUB.format(suffix), 'cub', 'cub', 'resnet50_cub', block, where, IMAGENET),
             _row('T7', f'UCF-101 {label}', ucf, R3D50.format(suffix), 'ucf101', 'ucf101_r3d', 'r3d50', block, where,
                  HARA_K400)]
ROWS += [
    _row('T8', 'P3D', '81.23', 'ucf101/r2plus1d_r34_k400-pretrained_8xb8-8x8x1-100e_ucf101-split1-rgb.py', 'ucf101',
         'ucf101_r2plus1d', 'r2plus1d_r34', None, [], R2PLUS1D_K400),
    _row('T8', 'P3D + Ours', '82.65', 'ucf101/r2plus1d_r34-snl_k400-pretrained_8xb8-8x8x1-100e_ucf101-split1-rgb.py',
         'ucf101', 'ucf101_r2plus1d', 'r2plus1d_r34', _block('snl'), RES3_BEFORE_LAST, R2PLUS1D_K400),
    _row('T8', 'VTN', '90.06', 'ucf101/timesformer_divST_k400-pretrained_8xb8-8x32x1-100e_ucf101-split1-rgb.py',
         'ucf101', 'ucf101_timesformer', 'timesformer', None, [], TIMESFORMER_K400),
    _row('T8', 'VTN + Ours', '90.34',
         'ucf101/timesformer_divST-snl_k400-pretrained_8xb8-8x32x1-100e_ucf101-split1-rgb.py', 'ucf101',
         'ucf101_timesformer', 'timesformer', _block('snl'), TIMESFORMER_TEMPORAL, TIMESFORMER_K400),
]


# ---------------------------------------------------------------------------------------------------------------
def script_lrs(lr: float, drops: Tuple[int, ...], epochs: int, warmup: int = 10) -> List[float]:
    """The learning rate of each epoch as the paper's script sets it (``adjust_learning_rate`` with warm-up)."""
    ramp = np.linspace(lr * 0.1**len(drops), lr, num=warmup)
    shifted = [d + warmup for d in drops]
    out, current = [], lr
    for epoch in range(epochs):
        if epoch < warmup:
            out.append(float(ramp[epoch]))
        else:
            current *= 0.1 if epoch in shifted else 1.0
            out.append(current)
    return out


def config_lrs(cfg: Config) -> List[float]:
    """The learning rate of each epoch under the config's optimiser and mmengine's schedulers built from it."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = cfg.optim_wrapper.optimizer
    optimizer = torch.optim.SGD([param], lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    schedulers: List[_ParamScheduler] = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
                                         for s in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for s in schedulers:
            s.step()
    return lrs


def check_schedule(cfg: Config, task: str) -> None:
    want = SCHEDULES[task]
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'SGD'
    assert (opt.lr, opt.momentum, opt.weight_decay) == (want['lr'], want['momentum'], want['weight_decay'])
    assert opt.get('nesterov', False) is False
    assert cfg.optim_wrapper.get('clip_grad') is None, 'the paper clips no gradient'
    assert cfg.train_cfg.max_epochs == want['epochs']
    assert cfg.auto_scale_lr.base_batch_size == want['batch']
    schedulers = list(cfg.param_scheduler)
    assert all(s.by_epoch for s in schedulers)
    if want['warmup'] is not None:
        warmup, step = schedulers
        epochs, start = want['warmup']
        assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, epochs)
        assert warmup.start_factor == pytest.approx(start) and warmup.end_factor == 1.0
        assert step.type == 'MultiStepLR' and step.begin == epochs and step.gamma == 0.1
    else:
        (step, ) = schedulers
        assert step.type == 'MultiStepLR' and step.get('begin', 0) == 0 and step.gamma == 0.1
    # mmengine counts milestones from the scheduler's `begin`: these are epochs after the warm-up
    assert tuple(step.milestones) == want['milestones']


def check_training(cfg: Config, config: str, task: str) -> None:
    """Batch and GPUs, the validation interval and the checkpoint rule of the reported accuracy."""
    (gpus, per_gpu), metric, interval = TRAINING[task]
    assert re.search(rf'_{gpus}xb{per_gpu}-', Path(config).name), 'the name says how many GPUs and images per GPU'
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.train_cfg.val_interval == 5, 'the code evaluates every 5 epochs (train_val.py:417)'
    assert cfg.train_cfg.get('val_begin', 1) == 1
    hook = cfg.default_hooks.checkpoint
    assert hook.type == 'CheckpointHook' and hook.interval == interval
    assert list(hook.save_best) == [f'{metric}/top1', f'{metric}/top5'] and hook.rule == 'greater'
    evaluator = cfg.val_evaluator
    if metric == 'accuracy':
        assert evaluator.type == 'Accuracy' and tuple(evaluator.topk) == (1, 5)
    else:  # mmaction2's AccMetric: top-1 and top-5 by default
        assert evaluator.type == 'AccMetric' and 'metric_options' not in evaluator
    assert cfg.test_evaluator == evaluator


def check_data(cfg: Config, data: str) -> None:
    want = DATA[data]
    loaders = (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader)
    for loader, pipeline in zip(loaders, want['pipelines']):
        dataset = loader.dataset
        assert dataset.type == want['dataset']
        assert [dict(t) for t in dataset.pipeline] == pipeline
    if data.startswith('ucf101'):
        assert [loader.dataset.ann_file for loader in loaders] == [UCF_LISTS['ann_file_train']] + \
            [UCF_LISTS['ann_file_val']] * 2
        assert all(loader.dataset.data_prefix == dict(video=UCF_LISTS['root']) for loader in loaders)
        pre = cfg.model.data_preprocessor
        assert (pre.type, pre.format_shape) == ('ActionDataPreprocessor', 'NCTHW')
        assert cfg.model.cls_head.num_classes == want['classes']
    else:
        for loader, split in zip(loaders, want['splits']):
            assert (loader.dataset.data_root, loader.dataset.split) == (want['root'], split)
            assert loader.dataset.get('download', False) is False
        pre = cfg.data_preprocessor
        assert pre.num_classes == want['classes'] == cfg.model.head.num_classes
        assert pre.to_rgb is want['to_rgb']
    assert list(pre.mean) == want['mean'] and list(pre.std) == want['std']


def class_defaults(cls: type) -> dict:
    """The default of every ``__init__`` argument of ``cls``, along its MRO (a subclass taking ``**kwargs``, as the
    package's ``plugins=`` classes, passes the rest to its base)."""
    defaults: dict = {}
    for klass in reversed(cls.__mro__):
        if '__init__' in vars(klass):
            for name, p in inspect.signature(klass.__init__).parameters.items():
                if p.default is not inspect.Parameter.empty:
                    defaults[name] = p.default
    return defaults


def backbone_args(cfg: Config) -> dict:
    """The backbone's arguments: its class's defaults, overridden by the config."""
    with MODELS.switch_scope_and_registry(cfg.default_scope) as registry:
        cls = registry.get(cfg.model.backbone.type)
    return dict(class_defaults(cls), **cfg.model.backbone.to_dict())


def check_network(cfg: Config, net: str, backbone: Optional[nn.Module]) -> None:
    want = NETS[net]
    args = backbone_args(cfg)
    assert {k: args[k] for k in want['backbone']} == want['backbone']
    model = cfg.model
    if model.type == 'ImageClassifier':  # mmpretrain: the code's dropout before the classifier is the neck
        assert (model.neck.type, model.neck.dropout) == ('snl_mm.GlobalAveragePoolingDropout', want['dropout'])
        assert model.head.type == 'LinearClsHead'
        assert model.head.get('init_cfg') == want['head_init']
    else:
        assert model.cls_head.get('dropout_ratio') == want['dropout']
    if backbone is None:
        return
    if 'units' in want:
        stages = [backbone.get_submodule(name) for name in backbone.res_layers]
        units = tuple(sum(1 for m in stage.children() if hasattr(m, 'conv1')) for stage in stages)
        assert units == want['units']
    if 'stem' in want:
        conv1 = backbone.conv1 if isinstance(backbone.conv1, nn.Conv2d) else backbone.conv1.conv
        assert (conv1.kernel_size[0], conv1.stride[0]) == want['stem']


def build_backbone(cfg: Config):
    """The config's backbone, initialised; a checkpoint it would load is left out (:func:`initialisation` checks
    which one it names)."""
    backbone = cfg.model.backbone.copy()
    if isinstance(backbone.get('init_cfg'), dict) and backbone.init_cfg.get('type') == 'Pretrained':
        backbone.pop('init_cfg')
    if 'img_size' in backbone:  # a transformer: where its blocks are does not depend on the frame size, and the
        backbone.img_size = 32  # build-time check would run a ViT-B on 8 frames of 224 x 224
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(backbone)
    model.init_weights()
    return model


def expected_paths(backbone, where, block: dict) -> List[str]:
    if isinstance(where[0], str):  # replaced modules: the blocks take their places
        return [f'{path}.{ABBR[block["type"]]}' for path in where]
    paths = []
    for stage, unit in where:
        units = len(backbone.get_submodule(stage))
        paths.append(f'{stage}.{unit % units}.{ABBR[block["type"]]}')
    return paths


def initialisation(cfg: Config) -> str:
    init = cfg.model.backbone.get('init_cfg')
    if isinstance(init, dict) and init.get('type') == 'Pretrained':
        assert cfg.get('load_from') is None and init.prefix == 'backbone'
        return Path(init.checkpoint).name
    return Path(cfg.load_from).name if cfg.get('load_from') else SCRATCH


def resolved_block_args(block: dict) -> dict:
    """The block's arguments: the class's defaults, overridden by the config's entry."""
    return dict(class_defaults(MODELS.get(block['type'])), **{k: v for k, v in block.items() if k != 'type'})


def output_norms(unit: nn.Module) -> List[nn.Module]:
    return [m for m in unit.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))]


def check_built_block(unit: nn.Module, block: dict, spatial: int) -> None:
    """What the built block is: biases, activation, norm, affinity, and how it starts."""
    args = resolved_block_args(block)
    convs = [m for m in unit.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    assert any(c.bias is not None for c in convs) is args['bias'], 'biases of the 1x1 convolutions'
    act = getattr(unit, 'act', None)
    assert (None if act is None else dict(type=type(act).__name__)) == args['act_cfg']
    norms = output_norms(unit)
    norm_type = {'BN': nn.modules.batchnorm._BatchNorm, 'GN': nn.GroupNorm}[args['norm_cfg']['type']]
    assert len(norms) == 1 and isinstance(norms[0], norm_type)
    if block['type'] in AFFINITIES:
        graph = unit.graph.config
        want = dict(AFFINITIES[block['type']])
        if block['type'] == 'NLBlock':
            want['scale'] = 'inv_sqrt' if args['use_scale'] else 1.0
        assert {k: graph[k] for k in want} == want
    released = args['init_cfg'] is not None
    weight = norms[0].weight.detach()
    assert torch.equal(weight, torch.ones_like(weight) if released else torch.zeros_like(weight))
    assert not norms[0].bias.detach().any()
    x = torch.randn(2, unit.in_channels, *(3, ) * spatial)
    unit.eval()
    with torch.no_grad():
        y = unit(x)
    if released:  # the released PreResNet's start: the block adds to its input from the first step
        assert not torch.equal(y, x)
        if args['act_cfg'] is not None:
            assert (y - x).min() >= 0, 'a ReLU ends the unit'
    else:  # identity at init: the pretrained (or baseline) network is what it was
        assert torch.equal(y, x)


@pytest.mark.parametrize('config, task, data, net, block, where, init, paper', ROWS)
def test_row(config, task, data, net, block, where, init, paper):
    cfg = Config.fromfile(str(CONFIGS / config))
    check_schedule(cfg, task)
    check_training(cfg, config, task)
    check_data(cfg, data)
    assert initialisation(cfg) == init
    assert cfg.custom_imports == dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

    entries = cfg.model.backbone.get('plugins') or []
    if block is None:
        assert entries == [], 'a baseline row has no block'
        check_network(cfg, net, None)
        return
    assert [e.cfg.to_dict() for e in entries] == [block] * len(entries)
    want = dict(DEFAULTS[block['type']], **{k: v for k, v in block.items() if k != 'type'})
    resolved = resolved_block_args(block)
    assert {k: resolved[k] for k in want} == want, 'the block with the class defaults the config does not write'

    backbone = build_backbone(cfg)
    check_network(cfg, net, backbone)
    paths = backbone.plugin_paths
    assert paths == expected_paths(backbone, where, block)
    for path in paths:
        unit = backbone.get_submodule(path)
        assert type(unit).__name__ == block['type']
        assert unit.inner_channels == unit.in_channels // block['reduction']
        check_built_block(unit, block, 3 if task == 'ucf101' and not isinstance(where[0], str) else 2)


def test_imagenet_snl_milestones_after_warmup():
    """The ImageNet schedule: lr 0.01, 10 warm-up epochs, / 10 after 31, 61 and 81 of the 100 that follow."""
    cfg = Config.fromfile(str(CONFIGS / 'imagenet/resnet50-snl_8xb32-110e_in1k.py'))
    warmup, step = cfg.param_scheduler
    assert warmup.end - warmup.begin == 10 and step.begin == 10
    assert step.milestones == [31, 61, 81] and cfg.train_cfg.max_epochs == 110
    lrs = config_lrs(cfg)
    assert lrs == pytest.approx(script_lrs(0.01, (31, 61, 81), 110), rel=1e-12)
    drops = [e for e in range(1, 110) if lrs[e] < lrs[e - 1] * 0.5]
    assert drops == [41, 71, 91]
    assert lrs[0] == pytest.approx(1e-5) and lrs[9] == pytest.approx(0.01) and lrs[10] == pytest.approx(0.01)


@pytest.mark.parametrize('config', [PRN.format('-snl'), R50C.format('', 10)])
def test_cifar_schedule_is_the_scripts(config):
    lrs = config_lrs(Config.fromfile(str(CONFIGS / config)))
    assert len(lrs) == 310
    assert lrs == pytest.approx(script_lrs(0.1, (150, 250), 310), rel=1e-12)


def test_cub_schedule_is_the_papers_sentence():
    """"110 epochs with the initial learning rate 0.1 which is subsequently divided by 10 at 31, 61, 81 epochs"."""
    lrs = config_lrs(Config.fromfile(str(CONFIGS / CUB.format('-snl'))))
    assert lrs == pytest.approx([0.1] * 31 + [0.01] * 30 + [0.001] * 20 + [0.0001] * 29, rel=1e-12)


def test_ucf101_schedule_steps_every_40_epochs():
    lrs = config_lrs(Config.fromfile(str(CONFIGS / R3D50.format('-snl'))))
    assert lrs == pytest.approx([0.01] * 40 + [0.001] * 40 + [0.0001] * 20, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
def readme_section() -> str:
    text = (REPO / 'README.md').read_text()
    start = text.index('## Reproducing the paper')
    end = text.index('\n## ', start + 1)
    return text[start:end]


def test_readme_names_each_rows_config_and_number():
    """README "Reproducing the paper": each row of this file is a table line naming its config and the paper's
    number; every config the section names exists."""
    section = readme_section()
    lines = section.splitlines()
    for param in ROWS:
        config, paper = param.values[0], param.values[7]
        hits = [line for line in lines if f'`{config}`' in line and line.startswith('|')]
        assert hits, f'{config} ({param.id}) is in no table line of the README section'
        assert any(paper in line for line in hits), f'{param.id}: {paper} is not on the line of `{config}`'
    named = set(re.findall(r'`((?:cifar|imagenet|cub|ucf101)/[\w./-]+\.py)`', section))
    missing = sorted(c for c in named if not (CONFIGS / c).is_file())
    assert not missing, missing


def test_reproducing_table_has_every_row():
    """docs/reproducing.md: one table, a line per row of Tables 2-8 naming its config."""
    text = (REPO / 'docs' / 'reproducing.md').read_text()
    start = text.index('## The rows, setting by setting')
    section = text[start:text.index('\n## ', start + 1)]
    lines = [line for line in section.splitlines() if line.startswith('|')]
    for param in ROWS:
        config = param.values[0]
        assert any(f'`{config}`' in line for line in lines), f'{param.id}: {config} is not in the table'


# ---------------------------------------------------------------------------------------------------------------
# The blocks of the rows against the units of the released code, re-implemented in float64 from
# SNL-Classification/model/nls/ (basic.py: Stage.DotKernel; nl.py: NLUnit).
# ---------------------------------------------------------------------------------------------------------------
def _conv(w: dict, name: str, t: torch.Tensor) -> torch.Tensor:
    return F.conv2d(t, w[f'{name}.weight'], w.get(f'{name}.bias'))


def _bn(w: dict, prefix: str, y: torch.Tensor, eps: float) -> torch.Tensor:
    return F.batch_norm(y, w[f'{prefix}.running_mean'], w[f'{prefix}.running_var'], w[f'{prefix}.weight'],
                        w[f'{prefix}.bias'], False, 0.0, eps)


def _released_unit(x, g, att, w, out_conv, out_bn, eps, relu):
    """``NLUnit.forward``: ``x + relu(bn(W (att g)))`` (the ReLU only in the released PreResNet's start)."""
    b, c, h, wd = x.shape
    y = (att @ g.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, wd)
    y = _bn(w, out_bn, _conv(w, out_conv, y), eps)
    return x + (torch.relu(y) if relu else y)


@pytest.mark.parametrize('relu', [False, True], ids=['identity-start', 'released-preresnet-start'])
def test_spectral_a2_baseline_is_the_codes_a2_unit(relu):
    """``nonlocal_blocks.a2`` computes the code's ``a2`` unit (``Stage.DotKernel`` without ``is_norm`` or
    ``is_sys``, then ``NLUnit``): ``x + [relu](bn(W (relu(t) relu(p)^T) g))``, float64 reference."""
    blocks = Config.fromfile(str(CONFIGS / '_base_/blocks.py'))
    cfg = dict(blocks.nonlocal_blocks.a2, **(blocks.released_preresnet_unit if relu else {}))
    block = MODELS.build(dict(cfg, in_channels=8)).double()
    randomise_(block, seed=2).eval()
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    w = block.state_dict()
    t, p, g = (_conv(w, n, x).flatten(2) for n in ('theta', 'phi', 'g'))
    att = torch.relu(t).transpose(1, 2) @ torch.relu(p)  # (B, N, N), no normalisation
    with torch.no_grad():
        assert rel_err(block(x), _released_unit(x, g.reshape(2, 4, 5, 3), att, w, 'w2', 'norm', block.norm.eps,
                                                relu)) < 1e-12
    assert sorted(k.split('.')[0] for k in w if k.endswith('weight')) == ['g', 'norm', 'phi', 'theta', 'w2']
    assert not any(k.endswith('.bias') and not k.startswith('norm') for k in w), 'no convolution has a bias'


@pytest.mark.parametrize('relu', [False, True], ids=['identity-start', 'released-preresnet-start'])
def test_nl_of_the_rows_is_the_codes_nl_unit(relu):
    """``nonlocal_blocks.nl``: the code's NL (``Stage.DotKernel`` with a softmax and no scale, then ``NLUnit``),
    bias-free 1x1 convolutions: ``x + [relu](bn(W softmax(t^T p) g))``, float64 reference."""
    blocks = Config.fromfile(str(CONFIGS / '_base_/blocks.py'))
    cfg = dict(blocks.nonlocal_blocks.nl, **(blocks.released_preresnet_unit if relu else {}))
    block = MODELS.build(dict(cfg, in_channels=8)).double()
    randomise_(block, seed=3).eval()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    w = block.state_dict()
    assert not [k for k in w if k.endswith('.bias') and '.bn.' not in k], 'the code\'s convolutions have no bias'
    t, p, g = (_conv(w, f'{n}.conv', x) for n in ('theta', 'phi', 'g'))
    att = torch.softmax(t.flatten(2).transpose(1, 2) @ p.flatten(2), dim=2)  # no 1 / sqrt(Cs)
    with torch.no_grad():
        assert rel_err(block(x), _released_unit(x, g, att, w, 'conv_out.conv', 'conv_out.bn',
                                                block.conv_out.bn.eps, relu)) < 1e-12


@pytest.mark.parametrize('name', ['nl', 'ns', 'a2', 'snl'])
def test_released_resnet_start_passes_no_gradient(name):
    """The released ResNet zero-initialises the block's BN and then applies the unit's ReLU
    (resnet_snl.py:163-171; nl.py:35-37): the BN's output is exactly 0, where the ReLU's gradient is 0, so no
    parameter of the block ever gets a gradient and the block stays the identity. The package's start (the same
    zero BN, no ReLU: Eq. 5) does train."""
    blocks = Config.fromfile(str(CONFIGS / '_base_/blocks.py'))
    released = MODELS.build(dict(blocks.nonlocal_blocks[name], **blocks.released_preresnet_unit, in_channels=8))
    for norm in output_norms(released):  # what resnet_snl.py:163-171 does to the built block
        nn.init.zeros_(norm.weight)
        nn.init.zeros_(norm.bias)
    package = MODELS.build(dict(blocks.nonlocal_blocks[name], in_channels=8))
    x = torch.randn(4, 8, 5, 5)
    for block, trains in ((released, False), (package, True)):
        block.train()
        y = block(x)
        assert torch.equal(y, x)
        (y * torch.randn_like(y)).sum().backward()
        grads = {n: p.grad for n, p in block.named_parameters()}
        moved = [n for n, grad in grads.items() if grad is not None and grad.any()]
        assert bool(moved) is trains, moved
