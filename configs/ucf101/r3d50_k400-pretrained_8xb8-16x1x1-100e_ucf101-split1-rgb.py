# UCF-101 split 1, the 3D ResNet-50 of Hara et al. 2018 from a Kinetics-400 checkpoint, without a nonlocal block:
# the backbone row of the paper's Table 7 (UCF-101). Sec. 3.2: "We follow the I3D structure Hara et al. (2018) which
# uses k x k x k kernels to replace the convolution operator in the residual block ... The weights are initialized
# by the pre-trained I3D model on Kinetics dataset". The r3d50-* configs add one block at `placement`.
#
# The network is mmaction2's ResNet3d with Hara's arguments: a 7x7x7 stem of temporal stride 1, 3x3x3 kernels in
# the middle convolution of every bottleneck (`inflate_style='3x3x3'`, `inflate=1` everywhere), stride 2 in time and
# space at res3, res4 and res5, no pool after res2; projections are a 1x1x1 convolution and a BN ("shortcut B").
# The one difference from Hara's network: its stem max-pool takes 3x3x3 windows, mmaction2's 1x3x3 ones (with the
# same stride 2 in time and space); a pool has no weights, so Hara's checkpoints load unchanged.
# Input: 16 frames in a row at 112 x 112, as Hara's Kinetics models (mmaction2's 16-frame pipeline of C3D); the
# paper gives no clip size.
_base_ = './i3d_r50_k400-pretrained_8xb8-32x2x1-100e_ucf101-split1-rgb.py'

# ---- checkpoint ----
# Hara et al.'s Kinetics-400 ResNet-50 (resnet-50-kinetics.pth of kenshohara/3D-ResNets-PyTorch) converted to
# mmaction2's keys: python tools/convert_hara_r3d.py resnet-50-kinetics.pth checkpoints/r3d50_hara_kinetics400.pth
k400_checkpoint = 'checkpoints/r3d50_hara_kinetics400.pth'
load_from = k400_checkpoint

model = dict(
    backbone=dict(
        conv1_kernel=(7, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=2,
        with_pool2=False,
        inflate=(1, 1, 1, 1),
        inflate_style='3x3x3',
        spatial_strides=(1, 2, 2, 2),
        temporal_strides=(1, 2, 2, 2)))

# ---- data: 16 consecutive frames at 112 x 112 ----
file_client_args = dict(io_backend='disk')
train_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=16, frame_interval=1, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 128)),
    dict(type='RandomCrop', size=112),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=16, frame_interval=1, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 128)),
    dict(type='CenterCrop', crop_size=112),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=16, frame_interval=1, num_clips=10, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 128)),
    dict(type='CenterCrop', crop_size=112),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
