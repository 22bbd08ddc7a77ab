# UCF-101 split 1, I3D ResNet-50 initialised from a Kinetics-400 I3D checkpoint, without a nonlocal block:
# the baseline of the paper's Table 7 (UCF-101). mmaction2's own I3D config with UCF-101 data; the block
# configs of this folder inherit it. Videos are decoded on the fly (VideoDataset); the *-rawframes configs
# read extracted frames instead.
_base_ = 'mmaction::recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- paths ----
# mmaction2's UCF-101 layout (tools/data/ucf101 of mmaction2): {data_root}/<class>/<video>.avi and the
# annotation lists ucf101_{train,val}_split_{split}_videos.txt ("<class>/<video>.avi <label>" per line).
data_root = 'data/ucf101/videos'
split = 1  # the paper uses split 1 (7,912 train / 1,625 test videos as it counts them)
ann_file_train = f'data/ucf101/ucf101_train_split_{split}_videos.txt'
ann_file_val = f'data/ucf101/ucf101_val_split_{split}_videos.txt'
# mmaction2's Kinetics-400 I3D ResNet-50, downloaded beforehand (nothing is downloaded at run time):
# https://download.openmmlab.com/mmaction/v1.0/recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb_20220812-e213c223.pth  # noqa: E501
k400_checkpoint = ('checkpoints/'
                   'i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb_20220812-e213c223.pth')

# The whole recognizer loads from the Kinetics checkpoint (the 400-class head is skipped for its shape, the
# blocks keep their identity initialisation); no ImageNet inflation, hence no torchvision download.
model = dict(backbone=dict(pretrained=None, pretrained2d=False), cls_head=dict(num_classes=101))
load_from = k400_checkpoint

train_dataloader = dict(dataset=dict(ann_file=ann_file_train, data_prefix=dict(video=data_root)))
val_dataloader = dict(dataset=dict(ann_file=ann_file_val, data_prefix=dict(video=data_root)))
test_dataloader = dict(dataset=dict(ann_file=ann_file_val, data_prefix=dict(video=data_root)))

# ---- schedule (paper, Sec. 3.2): lr 0.01 divided by 10 every 40 epochs, 100 epochs, momentum 0.9 and
# weight decay 1e-4 (Sec. 3.1). mmaction2's sgd_100e schedule, which the I3D config uses, is exactly this;
# restated here so that the config reads whole. ----
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=100, by_epoch=True, milestones=[40, 80], gamma=0.1)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=100, val_begin=1, val_interval=1)
