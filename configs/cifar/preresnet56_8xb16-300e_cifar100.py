# CIFAR-100, PreResNet-56 without a nonlocal block: the backbone row of the paper's Tables 2-5 (Sec. 3.1), as the
# paper's code builds and trains it. The block and ablation configs of this folder inherit it and add one plugin
# entry: the block they name (configs/_base_/blocks.py) at `placement` (below).
_base_ = [
    'mmpretrain::_base_/models/resnet50_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/schedules/sgd_warmup_310e.py',  # lr 0.1, 10 warm-up epochs, / 10 at 160 and 260, 310 epochs
]
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- paths ----
# mmpretrain's CIFAR layout: {data_root}/cifar-100-python/{train,test,meta} (the python version of the
# official archive; see docs/reproducing.md).
data_root = 'data/cifar100'
train_dataloader = dict(dataset=dict(data_root=data_root, download=False))
val_dataloader = dict(dataset=dict(data_root=data_root, download=False))
test_dataloader = dict(dataset=dict(data_root=data_root, download=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

# ---- data: the code normalises CIFAR-100 with the CIFAR-10 statistics (SNL-Classification/train_val.py:295-297,
# 303-305, the same numbers as its CIFAR-10 branch, :274-276), not mmpretrain's CIFAR-100 ones (129.3 / 68.2 ...).
# Crops as the code (train_val.py:291-293): RandomCrop 32 with padding 4 and a horizontal flip (mmpretrain's
# pipeline); the test images as they are. ----
data_preprocessor = dict(num_classes=100, mean=[125.307, 122.961, 113.8575], std=[51.5865, 50.847, 51.255])

# ---- evaluation as the code (train_val.py:417-426): every 5 epochs (`val_interval=5` of the schedule); the
# paper's numbers are the best top-1 over those evaluations and, separately, the best top-5: a checkpoint is kept for
# each (`best_accuracy_top1_epoch_*.pth`, `best_accuracy_top5_epoch_*.pth`) and the log names both scores; the
# checkpoint of every epoch (for --resume) is kept for the last 3 ----
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                                     save_best=['accuracy/top1', 'accuracy/top5'], rule='greater'))

# ---- model: PreResNet-56 in the layout of the paper's code (SNL-Classification/model/preresnet_snl.py) ----
# Its projections are a 1x1 convolution and a BN on the unit's raw input, and after the last stage come BN-ReLU,
# a 1x1 convolution, BN-ReLU, average pooling and `nn.Dropout(0.5)` before the linear classifier. (He et al.'s
# layout, a 1x1 projection of the pre-activated input and no extra convolution: `projection='preact'`,
# `final_conv=False` and `neck=dict(type='GlobalAveragePooling')`; docs/reproducing.md.)
# The code's `preresnet56` is 27 bottleneck units, 9 per stage (preresnet_snl.py:241-245), about 83 layers with
# weights, not He et al.'s PreResNet-56 of basic units; `depth=56` names that layout here.
# It has no initialisation loop (preresnet_snl.py:128-155): every convolution and linear layer keeps PyTorch's
# default, kaiming_uniform(a=sqrt(5)) (biases: 0 here, U(+-1/sqrt(fan_in)) in PyTorch), every BN weight 1, and so
# does every block (configs/_base_/blocks.py, `released_preresnet_unit`).
pytorch_default_init = dict(type='Kaiming', a=5**0.5, mode='fan_in', nonlinearity='leaky_relu', distribution='uniform')
model = dict(
    backbone=dict(_delete_=True, type='snl_mm.PreResNet', depth=56, projection='conv_bn', final_conv=True,
                  out_indices=(2, ),
                  init_cfg=[dict(pytorch_default_init, layer=['Conv2d']),
                            dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]),
    neck=dict(_delete_=True, type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5),
    head=dict(num_classes=100, in_channels=256, init_cfg=dict(pytorch_default_init, layer='Linear')))

# ---- where the block configs put their block (paper, Sec. 3.1): "add 1 nonlocal-based block right after the
# second residual block in the early stage (res1)"; the code inserts it before unit 2 of `layer1` ----
placement = dict(stages=(True, False, False), position='after_block', blocks=(1, ))
# and how the block starts: see configs/_base_/blocks.py (`released_preresnet_unit`, `released_preresnet_init`) and
# configs/cifar/README.md (the paper's identity start is the `-identity-init` variant)
