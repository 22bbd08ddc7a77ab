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
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))

# ---- model: the paper's code averages, drops half of the pooled features (`nn.Dropout(0.5)`) and classifies
# (SNL-Classification/model/resnet_snl.py) ----
model = dict(neck=dict(_delete_=True, type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5))

# ---- where the block configs put their block (paper, Sec. 3.2): "right before the last residual block of res4"
# (the code inserts it before the last unit of `layer3`) ----
placement = dict(stages=(False, False, True, False), position='after_block', blocks=(-2, ))
