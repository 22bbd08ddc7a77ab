# ImageNet-1k, ResNet-50 without a nonlocal block: the baseline of the paper's Table 6 (Sec. 3.2), with the
# schedule the paper's code trains its ImageNet models with. The block configs of this folder inherit it and add
# one plugin entry: the block they name (configs/_base_/blocks.py) at `placement` (below).
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/schedules/sgd_warmup_110e.py',  # lr 0.01, 10 warm-up epochs, / 10 at 41, 71 and 91, 110 epochs
]
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- paths ----
# mmpretrain's ImageNet layout: {data_root}/train/<class>/*.JPEG, {data_root}/val/*.JPEG and
# {data_root}/meta/{train,val}.txt (see docs/reproducing.md, "Data and checkpoints").
data_root = 'data/imagenet'
# ---- data: the code's crops (SNL-Classification/train_val.py:229-253): RandomResizedCrop 224 over (0.08, 1.25) of
# the image area (torchvision's default, and mmpretrain's, stop at 1.0) and a flip; at test the shorter side resized
# to 256 and the centre 224 (mmpretrain's pipeline). Normalisation: ImageNet's mean and std, as mmpretrain. ----
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.08, 1.25)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))

# ---- evaluation as the code (train_val.py:417-426): every 5 epochs (`val_interval=5` of the schedule), the best
# top-1 over those evaluations and, separately, the best top-5, each with its checkpoint
# (`best_accuracy_top1_epoch_*.pth`, `best_accuracy_top5_epoch_*.pth`); the log names both scores ----
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                                     save_best=['accuracy/top1', 'accuracy/top5'], rule='greater'))

# ---- model: the paper's code averages, drops half of the pooled features (`nn.Dropout(0.5)`) and classifies
# (SNL-Classification/model/resnet_snl.py:152-154, 245-248). Initialisation as the code: every BN weight 1
# (resnet_snl.py:156-161; mmpretrain's default `zero_init_residual=True` would zero the last BN of every
# bottleneck), convolutions kaiming-normal (fan_out, mmpretrain's default too), the classifier PyTorch's default
# kaiming_uniform(a=sqrt(5)) (the loop leaves nn.Linear alone; its bias: 0 here, U(+-1/sqrt(2048)) there) ----
model = dict(
    backbone=dict(zero_init_residual=False),
    neck=dict(_delete_=True, type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5),
    head=dict(init_cfg=dict(type='Kaiming', layer='Linear', a=5**0.5, mode='fan_in', nonlinearity='leaky_relu',
                            distribution='uniform')))

# ---- where the block configs put their block (paper, Sec. 3.2): "right before the last residual block of res4"
# (the code inserts it before the last unit of `layer3`) ----
placement = dict(stages=(False, False, True, False), position='after_block', blocks=(-2, ))
