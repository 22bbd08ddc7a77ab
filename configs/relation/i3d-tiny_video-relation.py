# The video task of the benchmark of long-range relations (compare_blocks.py --task video), for the 3D blocks:
# clips of 8 frames of 16 x 16 (VideoRelationDataset) showing two objects of 4 px, each for 2 frames, at least 4
# frames and 8 px apart; label "same colour" or not. The network is a small I3D (mmaction2's Recognizer3D with
# snl_mm.ResNet3d: a 3x3x3 stem and one stage of two basic blocks with 1x3x3 convolutions, 16 channels, full
# resolution): it mixes time only in its stem (3 frames), so without a nonlocal block no unit sees both objects.
# `block_site` is where compare_blocks.py inserts the block under test: after the first residual block.
_base_ = 'mmaction::_base_/default_runtime.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

video = dict(clip_len=8, img_size=16, object_size=4, duration=2, min_frame_gap=4, min_distance=8, num_colors=6,
             noise_std=10, seed=0)
num_train, num_val, num_test = 2400, 500, 1000

model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='snl_mm.ResNet3d', depth=18, pretrained=None, pretrained2d=False, num_stages=1, stage_blocks=(2, ),
        base_channels=16, out_indices=(0, ), spatial_strides=(1, ), temporal_strides=(1, ), dilations=(1, ),
        conv1_kernel=(3, 3, 3), conv1_stride_s=1, conv1_stride_t=1, with_pool1=False, with_pool2=False,
        inflate=(0, )),
    cls_head=dict(type='I3DHead', num_classes=2, in_channels=16, spatial_type='avg', dropout_ratio=0.,
                  init_std=0.01, average_clips='prob'),
    data_preprocessor=dict(type='ActionDataPreprocessor', mean=[80., 80., 80.], std=[60., 60., 60.],
                           format_shape='NCTHW'))

train_pipeline = [
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = [dict(type='FormatShape', input_format='NCTHW'), dict(type='PackActionInputs')]
dataset = dict(type='snl_mm.VideoRelationDataset', **video)
train_dataloader = dict(
    batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(**dataset, split='train', num_samples=num_train, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=50, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, split='val', num_samples=num_val, pipeline=test_pipeline, test_mode=True))
test_dataloader = dict(
    batch_size=50, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, split='test', num_samples=num_test, pipeline=test_pipeline, test_mode=True))
val_evaluator = dict(type='AccMetric', metric_list=('top_k_accuracy', ), metric_options=dict(
    top_k_accuracy=dict(topk=(1, ))))
test_evaluator = val_evaluator

max_epochs = 4
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, T_max=max_epochs - 1,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(type='LoggerHook', interval=25),
                     checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=False)

block_site = dict(stages=(True, ), position='after_block', blocks=(0, ))
