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

# ---- model: PreResNet-56 in the layout of the paper's code (SNL-Classification/model/preresnet_snl.py) ----
# Its projections are a 1x1 convolution and a BN on the unit's raw input, and after the last stage come BN-ReLU,
# a 1x1 convolution, BN-ReLU, average pooling and `nn.Dropout(0.5)` before the linear classifier. (He et al.'s
# layout, a 1x1 projection of the pre-activated input and no extra convolution: `projection='preact'`,
# `final_conv=False` and `neck=dict(type='GlobalAveragePooling')`; docs/reproducing.md.)
model = dict(
    backbone=dict(_delete_=True, type='snl_mm.PreResNet', depth=56, projection='conv_bn', final_conv=True,
                  out_indices=(2, )),
    neck=dict(_delete_=True, type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5),
    head=dict(num_classes=100, in_channels=256))

# ---- where the block configs put their block (paper, Sec. 3.1): "add 1 nonlocal-based block right after the
# second residual block in the early stage (res1)"; the code inserts it before unit 2 of `layer1` ----
placement = dict(stages=(True, False, False), position='after_block', blocks=(1, ))
