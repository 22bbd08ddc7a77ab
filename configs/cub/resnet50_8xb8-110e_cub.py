# CUB-200-2011, ResNet-50 initialised from ImageNet weights, without a nonlocal block: the baseline of the paper's
# Table 7 (Sec. 3.2). The block configs of this folder inherit it and add one plugin entry: the block they name
# (configs/_base_/blocks.py) at `placement` (below).
#
# The paper's code has no CUB branch (`--dataset cub` would take its ImageNet branch: lr 0.01, warm-up, 224 x 224
# crops, from scratch; SNL-Classification/train_val.py:174-186), so this config follows the paper's sentence and,
# where the sentence is silent, the CGNL code whose CUB setting the paper follows ("as Yue et al. (2018)"):
# - schedule, Sec. 3.2: "We use the ResNet50 model pre-trained on ImageNet as the backbone and train the models for
#   total 110 epochs with the initial learning rate 0.1 which is subsequently divided by 10 at 31, 61, 81 epochs":
#   SGD lr 0.1 from epoch 0 (no warm-up), / 10 at epochs 31, 61 and 81, 110 epochs; momentum 0.9 and weight decay
#   1e-4 as every run of the paper (Sec. 3.1; train_val.py:361-365);
# - data, the CGNL code (kaiyuyue/cgnl-network.pytorch, train_val.py:63, 75, 100-123): RandomResizedCrop 448 over
#   (0.08, 1.25) of the image area and a flip for training; the shorter side resized to 512 and the centre 448 for
#   testing; ImageNet's mean and std; 5,994 training and 5,794 test images (the official split, as the paper);
# - batch: given by neither the paper nor the SNL code for CUB; the config keeps mmpretrain's 8 GPUs x 8 (the CGNL
#   code trains 8 x 32 at lr 0.01);
# - evaluation every 5 epochs and the best top-1, as the SNL code does for every dataset (train_val.py:417-426).
# (The schedule the code's ImageNet branch would run, lr 0.01 with 10 warm-up epochs and drops at 41, 71 and 91, is
# configs/_base_/schedules/sgd_warmup_110e.py.)
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/cub_bs8_448.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- schedule (the paper's sentence) ----
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, begin=0, end=110, milestones=[31, 61, 81], gamma=0.1)]
train_cfg = dict(by_epoch=True, max_epochs=110, val_interval=5)
val_cfg = dict()
test_cfg = dict()
# `--auto-scale-lr` scales the lr from this config's batch (8 x 8)
auto_scale_lr = dict(base_batch_size=64)

# ---- paths ----
# mmpretrain's CUB layout: {data_root}/images/, images.txt, image_class_labels.txt, train_test_split.txt
# (5,994 train / 5,794 test images, as the paper).
data_root = 'data/CUB_200_2011'
# ImageNet-1k ResNet-50 of mmpretrain, downloaded beforehand (nothing is downloaded at run time):
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth
imagenet_checkpoint = 'checkpoints/resnet50_8xb32_in1k_20210831-ea4938fc.pth'

# ---- data: the CGNL code's crops (above) in place of mmpretrain's Resize 600 + RandomCrop 448 ----
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=448, crop_ratio_range=(0.08, 1.25)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=512, edge='short'),
    dict(type='CenterCrop', crop_size=448),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best=['accuracy/top1', 'accuracy/top5'], rule='greater'))

# ---- model: ImageNet weights; average, `nn.Dropout(0.5)` and a 200-class linear layer initialised kaiming-normal
# (fan_out), as the CGNL code (train_val.py:146-150) ----
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=imagenet_checkpoint, prefix='backbone')),
    neck=dict(_delete_=True, type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5),
    head=dict(num_classes=200, init_cfg=dict(type='Kaiming', layer='Linear', mode='fan_out', nonlinearity='relu')))

# ---- where the block configs put their block (paper, Sec. 3.2, as for ImageNet): right before the last residual
# block of res4 ----
placement = dict(stages=(False, False, True, False), position='after_block', blocks=(-2, ))
