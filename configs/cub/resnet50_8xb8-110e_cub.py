# CUB-200-2011, ResNet-50 initialised from ImageNet weights, without a nonlocal block: the baseline of the
# paper's Table 7 (Sec. 3.2). mmpretrain's ResNet-50 CUB config (448 x 448 crops) with the paper's schedule;
# the block configs of this folder inherit it.
_base_ = 'mmpretrain::resnet/resnet50_8xb8_cub.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- paths ----
# mmpretrain's CUB layout: {data_root}/images/, images.txt, image_class_labels.txt, train_test_split.txt
# (5,994 train / 5,794 test images, as the paper).
data_root = 'data/CUB_200_2011'
# ImageNet-1k ResNet-50 of mmpretrain, downloaded beforehand (nothing is downloaded at run time):
# https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth
imagenet_checkpoint = 'checkpoints/resnet50_8xb32_in1k_20210831-ea4938fc.pth'

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=imagenet_checkpoint, prefix='backbone')))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))

# ---- schedule (paper, Sec. 3.2): lr 0.1, / 10 at epochs 31, 61 and 81, 110 epochs ----
# Momentum 0.9 and weight decay 1e-4 as the paper's other experiments.
optim_wrapper = dict(optimizer=dict(_delete_=True, type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[31, 61, 81], gamma=0.1)]
train_cfg = dict(by_epoch=True, max_epochs=110, val_interval=1)
