# CIFAR-100, PreResNet-56 without a nonlocal block: the backbone row of the paper's Tables 2-5 (Sec. 3.1).
# mmpretrain's CIFAR-100 config with its backbone swapped for the pre-activation ResNet-56 and the paper's
# schedule; the block and ablation configs of this folder inherit it.
_base_ = 'mmpretrain::resnet/resnet50_8xb16_cifar100.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- paths ----
# mmpretrain's CIFAR layout: {data_root}/cifar-100-python/{train,test,meta} (the python version of the
# official archive; see docs/reproducing.md).
data_root = 'data/cifar100'

model = dict(
    backbone=dict(_delete_=True, type='snl_mm.PreResNet', depth=56, out_indices=(2, )),
    head=dict(in_channels=256))

train_dataloader = dict(dataset=dict(data_root=data_root, download=False))
val_dataloader = dict(dataset=dict(data_root=data_root, download=False))
test_dataloader = dict(dataset=dict(data_root=data_root, download=False))

# ---- schedule (paper, Sec. 3.1): SGD lr 0.1, momentum 0.9, weight decay 1e-4, lr / 10 at 150 and 250,
# 300 epochs. Batch 8 GPUs x 16 = 128 as mmpretrain's CIFAR configs. ----
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[150, 250], gamma=0.1)]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
