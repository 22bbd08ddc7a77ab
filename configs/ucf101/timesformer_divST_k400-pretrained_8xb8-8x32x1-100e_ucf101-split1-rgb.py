# UCF-101 split 1, mmaction2's TimeSformer (divided space-time attention) from its Kinetics-400 checkpoint, without
# a nonlocal block: the closest network mmaction2 ships to the Video Transformer Network (VTN, Kozlov et al. 2019)
# of the paper's Table 8 (Appendix C.1), row "VTN". VTN runs a 2D CNN on every frame and multi-head self-attention
# across the frames; TimeSformer is attention in space and time throughout. The timesformer_divST-snl config
# replaces one of its attention modules by the block (`placement`).
# Appendix C.1: "Other setting such as the learning rate and training epochs are the same as the experiment on I3D
# in our paper": the UCF-101 schedule (mmaction2's sgd_100e) and data; clips of 8 frames, one every 32, at
# 224 x 224, as mmaction2's TimeSformer was trained. The model is mmaction2's (its recognition/timesformer configs),
# without the ImageNet ViT download of `pretrained`.
_base_ = [
    'mmaction::_base_/schedules/sgd_100e.py',  # lr 0.01, / 10 at 40 and 80, 100 epochs
    'mmaction::_base_/default_runtime.py',
    '../_base_/datasets/ucf101_split1_videos.py',
]
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- checkpoint ----
# mmaction2's Kinetics-400 TimeSformer (divST), downloaded beforehand (nothing is downloaded at run time):
# https://download.openmmlab.com/mmaction/v1.0/recognition/timesformer/timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb/timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb_20220815-a4d0d01f.pth  # noqa: E501
k400_checkpoint = 'checkpoints/timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb_20220815-a4d0d01f.pth'
load_from = k400_checkpoint

model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='TimeSformer',
        pretrained=None,
        num_frames=8,
        img_size=224,
        patch_size=16,
        embed_dims=768,
        in_channels=3,
        dropout_ratio=0.,
        transformer_layers=None,
        attention_type='divided_space_time',
        norm_cfg=dict(type='LN', eps=1e-6)),
    cls_head=dict(type='TimeSformerHead', num_classes=101, in_channels=768, average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
        format_shape='NCTHW'))
default_hooks = dict(checkpoint=dict(interval=5, max_keep_ckpts=5))
auto_scale_lr = dict(enable=False, base_batch_size=64)

# ---- where the block goes (Appendix C.1): "we replace its multi-head self-attention blocks (paralleled-connected NL
# blocks) into our SNL blocks": the spatial attention (`attentions.1`; `attentions.0` attends in time) of the fourth
# of the twelve layers, replaced whole: the block gets the layer's tokens as the patch grid of every frame, the class
# token passing by (snl_mm/backbones/mmaction.py) ----
placement = dict(replace='transformer_layers.layers.3.attentions.1')

# ---- data: mmaction2's TimeSformer pipelines (8 frames, one every 32, 224 x 224) ----
file_client_args = dict(io_backend='disk')
train_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=8, frame_interval=32, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='RandomRescale', scale_range=(256, 320)),
    dict(type='RandomCrop', size=224),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=8, frame_interval=32, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=8, frame_interval=32, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
