# CIFAR-10, ResNet-50 (mmpretrain's CIFAR variant) without a nonlocal block: a backbone row of the paper's
# Table 5 (Sec. 3.2). mmpretrain's own config with the schedule of the paper's CIFAR experiments; the block
# configs of this folder inherit it.
_base_ = 'mmpretrain::resnet/resnet50_8xb16_cifar10.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- paths ----
# mmpretrain's CIFAR layout: {data_root}/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
# (see docs/reproducing.md).
data_root = 'data/cifar10'

train_dataloader = dict(dataset=dict(data_root=data_root, download=False))
val_dataloader = dict(dataset=dict(data_root=data_root, download=False))
test_dataloader = dict(dataset=dict(data_root=data_root, download=False))

# ---- schedule (paper, Sec. 3.2: "the same as our ablation experiments"): SGD lr 0.1, momentum 0.9,
# weight decay 1e-4, lr / 10 at 150 and 250, 300 epochs. Batch 8 GPUs x 16 = 128 as mmpretrain's config. ----
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[150, 250], gamma=0.1)]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
