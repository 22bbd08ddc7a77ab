# CIFAR-10, ResNet-50 (mmpretrain's CIFAR variant: 3x3 stem, no max pooling, as the paper's code) without a
# nonlocal block: a backbone row of the paper's Table 5 (Sec. 3.2: "Other settings for the CIFAR-10/100 are the
# same as our ablation experiments"). The block configs of this folder inherit it and add one plugin entry: the
# block they name (configs/_base_/blocks.py) at `placement` (below).
_base_ = [
    'mmpretrain::_base_/models/resnet50_cifar.py',
    'mmpretrain::_base_/datasets/cifar10_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/schedules/sgd_warmup_310e.py',  # lr 0.1, 10 warm-up epochs, / 10 at 160 and 260, 310 epochs
]
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- paths ----
# mmpretrain's CIFAR layout (see docs/reproducing.md).
data_root = 'data/cifar10'
train_dataloader = dict(dataset=dict(data_root=data_root, download=False))
val_dataloader = dict(dataset=dict(data_root=data_root, download=False))
test_dataloader = dict(dataset=dict(data_root=data_root, download=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

# ---- data: mmpretrain's CIFAR-10 normalisation is the code's (SNL-Classification/train_val.py:274-276); crops as
# the code (:270-272): RandomCrop 32 with padding 4 and a horizontal flip; the test images as they are ----

# ---- evaluation as the code (train_val.py:417-426): every 5 epochs (`val_interval=5` of the schedule); the
# paper's numbers are the best top-1 over those evaluations and, separately, the best top-5: a checkpoint is kept for
# each (`best_accuracy_top1_epoch_*.pth`, `best_accuracy_top5_epoch_*.pth`) and the log names both scores; the
# checkpoint of every epoch (for --resume) is kept for the last 3 ----
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                                     save_best=['accuracy/top1', 'accuracy/top5'], rule='greater'))

# ---- model: the paper's code averages, drops half of the pooled features (`nn.Dropout(0.5)`) and classifies
# (SNL-Classification/model/resnet_snl.py:152-154, 245-248). The backbone is mmpretrain's ResNet_CIFAR with a
# `plugins` argument, whose build-time check of the blocks runs on one CIFAR image. Initialisation as the code:
# every BN weight 1 (resnet_snl.py:156-161; mmpretrain's default `zero_init_residual=True` would zero the last BN
# of every bottleneck), convolutions kaiming-normal (fan_out), but the 3x3 stem, which train_val.py:338-341 puts in
# after that loop with PyTorch's default kaiming_uniform(a=sqrt(5)); the classifier kaiming-normal (fan_out,
# train_val.py:344-348; its bias: 0 here, PyTorch's U(+-1/sqrt(2048)) there) ----
model = dict(
    backbone=dict(
        type='snl_mm.ResNet_CIFAR', probe_shape=(1, 3, 32, 32), zero_init_residual=False,
        init_cfg=[
            dict(type='Kaiming', layer=['Conv2d'],
                 override=dict(name='conv1', type='Kaiming', a=5**0.5, mode='fan_in', nonlinearity='leaky_relu',
                               distribution='uniform')),
            dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
        ]),
    neck=dict(_delete_=True, type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5),
    head=dict(num_classes=10, init_cfg=dict(type='Kaiming', layer='Linear', mode='fan_out', nonlinearity='relu')))

# ---- where the block configs put their block (paper, Sec. 3.2): "right before the last residual block of res4"
# (the code inserts it before the last unit of `layer3`) ----
placement = dict(stages=(False, False, True, False), position='after_block', blocks=(-2, ))
