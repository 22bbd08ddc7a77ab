# ImageNet-1k, ResNet-50 without a nonlocal block: the baseline of the paper's Table 6 (Sec. 3.2).
# mmpretrain's own ResNet-50 config with the paper's schedule; the block configs of this folder inherit it.
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- paths ----
# mmpretrain's ImageNet layout: {data_root}/train/<class>/*.JPEG, {data_root}/val/*.JPEG and
# {data_root}/meta/{train,val}.txt (see docs/reproducing.md, "Data preparation").
data_root = 'data/imagenet'

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))

# ---- schedule (paper, Sec. 3.2): SGD lr 0.01, momentum 0.9, weight decay 1e-4, 110 epochs,
# lr / 10 at epochs 61 and 81 ----
# The paper writes "divided by 31 at 61 and 81 epochs"; we read 31 as a typo for 10, the factor of every
# other schedule in the paper. Batch 8 GPUs x 32 as mmpretrain's config (--auto-scale-lr rescales the lr).
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[61, 81], gamma=0.1)]
train_cfg = dict(by_epoch=True, max_epochs=110, val_interval=1)
