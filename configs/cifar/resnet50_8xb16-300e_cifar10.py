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

# ---- model: the paper's code averages, drops half of the pooled features (`nn.Dropout(0.5)`) and classifies
# (SNL-Classification/model/resnet_snl.py). The backbone is mmpretrain's ResNet_CIFAR with a `plugins` argument,
# whose build-time check of the blocks runs on one CIFAR image ----
model = dict(
    backbone=dict(type='snl_mm.ResNet_CIFAR', probe_shape=(1, 3, 32, 32)),
    neck=dict(_delete_=True, type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5),
    head=dict(num_classes=10))

# ---- where the block configs put their block (paper, Sec. 3.2): "right before the last residual block of res4"
# (the code inserts it before the last unit of `layer3`) ----
placement = dict(stages=(False, False, True, False), position='after_block', blocks=(-2, ))
