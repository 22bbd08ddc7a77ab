# UCF-101 split 1, mmaction2's TimeSformer (divided space-time attention) from its Kinetics-400 checkpoint, without
# a nonlocal block: the closest network mmaction2 ships to the Video Transformer Network (VTN, Kozlov et al. 2019)
# of the paper's Table 8 (Appendix C.1), row "VTN". VTN runs a 2D CNN on every frame and multi-head self-attention
# across the frames; TimeSformer's layers each attend across the frames (`attentions.0`, per patch position) and then
# within each frame (`attentions.1`). The timesformer_divST-snl config replaces the attention across frames of every
# layer by the block (`placement`); the single-spatial variant replaces one attention within frames
# (`single_spatial_placement`).
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
auto_scale_lr = dict(enable=False, base_batch_size=64)
# as the I3D / 3D ResNet-50 rows: no gradient clipping (mmaction2's sgd_100e clips at 40; the paper does not), and
# evaluation every 5 epochs keeping the best top-1 and the best top-5 (i3d_r50_k400-pretrained_...-rgb.py)
optim_wrapper = dict(clip_grad=None)
train_cfg = dict(val_interval=5)
default_hooks = dict(checkpoint=dict(interval=5, max_keep_ckpts=5, save_best=['acc/top1', 'acc/top5'],
                                     rule='greater'))

# ---- where the block goes (Appendix C.1): "For the Video Transformer Network (VTN), we replace its multi-head
# self-attention blocks (paralleled-connected NL blocks) into our SNL blocks". VTN's self-attention relates the
# frames, so the blocks replace TimeSformer's attention across frames (`attentions.0`) in all twelve layers, each
# replaced whole (its residual included): the block gets the layer's tokens as the (T, H, W) patch grid, the class
# token passing by (snl_mm/backbones/mmaction.py), and relates every patch of every frame ----
placement = [dict(replace=f'transformer_layers.layers.{i}.attentions.0') for i in range(12)]
# the variant: one attention within frames, that of the fourth layer (timesformer_divST-snl-spatial-layer4 config)
single_spatial_placement = [dict(replace='transformer_layers.layers.3.attentions.1')]

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
