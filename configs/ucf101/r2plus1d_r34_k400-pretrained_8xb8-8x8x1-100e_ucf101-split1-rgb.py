# UCF-101 split 1, mmaction2's R(2+1)D-34 from its Kinetics-400 checkpoint, without a nonlocal block: the closest
# network mmaction2 ships to the pseudo-3D network (P3D, Qiu et al. 2017) of the paper's Table 8 (Appendix C.1),
# row "P3D". Both factor a 3D convolution into a spatial 1 x k x k and a temporal k x 1 x 1 one; P3D mixes three
# block designs (serial, parallel, serial with a shortcut) in a ResNet-50-sized network, R(2+1)D-34 uses the
# serial one in basic blocks. The r2plus1d_r34-snl config adds the block at `placement`.
# Appendix C.1: "We use the model pre-trained on Kinetic dataset and fine-tuning on the UCF-101 dataset. Other
# setting such as the learning rate and training epochs are the same as the experiment on I3D in our paper": the
# UCF-101 schedule (mmaction2's sgd_100e) and data; clips of 8 frames, one every 8, at 224 x 224, as mmaction2's
# R(2+1)D was trained.
_base_ = [
    'mmaction::_base_/models/r2plus1d_r34.py',
    'mmaction::_base_/schedules/sgd_100e.py',  # lr 0.01, / 10 at 40 and 80, 100 epochs
    'mmaction::_base_/default_runtime.py',
    '../_base_/datasets/ucf101_split1_videos.py',
]
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- checkpoint ----
# mmaction2's Kinetics-400 R(2+1)D-34, downloaded beforehand (nothing is downloaded at run time):
# https://download.openmmlab.com/mmaction/v1.0/recognition/r2plus1d/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb_20220812-47cfe041.pth  # noqa: E501
k400_checkpoint = 'checkpoints/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb_20220812-47cfe041.pth'
load_from = k400_checkpoint
model = dict(cls_head=dict(num_classes=101))
auto_scale_lr = dict(enable=False, base_batch_size=64)
# as the I3D / 3D ResNet-50 rows: no gradient clipping (mmaction2's sgd_100e clips at 40; the paper does not), and
# evaluation every 5 epochs keeping the best top-1 and the best top-5 (i3d_r50_k400-pretrained_...-rgb.py)
optim_wrapper = dict(clip_grad=None)
train_cfg = dict(val_interval=5)
default_hooks = dict(checkpoint=dict(interval=5, max_keep_ckpts=5, save_best=['acc/top1', 'acc/top5'],
                                     rule='greater'))

# ---- where the block goes (Appendix C.1): "our SNL block are inserted into the P3D right before the last residual
# layer of the res3" ----
placement = dict(stages=(False, True, False, False), position='after_block', blocks=(-2, ))

# ---- data: mmaction2's R(2+1)D pipelines (8 frames, one every 8, 224 x 224) ----
file_client_args = dict(io_backend='disk')
train_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=8, frame_interval=8, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=8, frame_interval=8, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=8, frame_interval=8, num_clips=10, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='ThreeCrop', crop_size=256),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
