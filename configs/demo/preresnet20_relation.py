# The embedded demo, baseline: the first stage of PreResNet-20 (a 3x3 stem and three pre-activation residual
# blocks at full resolution, receptive field 15 pixels) without a nonlocal block, on RelationDataset: images
# the package generates (no download) with two objects at least 21 pixels apart, labelled "same colour" or
# "different". The colour of one object says nothing about the label and no convolution window of this
# network holds both objects, so without a nonlocal block it cannot relate them. `make demo` trains this
# config and the SNL one (preresnet20-snl_relation.py) with tools/dist_train.sh on 2 processes and compares.
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- data: generated in memory, deterministic in `seed` (train, val and test draw disjoint images) ----
relation = dict(img_size=32, object_size=7, min_distance=21, num_colors=6, noise_std=10, seed=0)
num_train, num_val = 6400, 1000

data_preprocessor = dict(
    num_classes=2,
    mean=[80., 80., 80.],
    std=[60., 60., 60.],
    to_rgb=False)  # the generated images are RGB already

model = dict(
    type='ImageClassifier',
    backbone=dict(type='snl_mm.PreResNet', depth=20, num_stages=1, strides=(1, ), out_indices=(0, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=2,
        in_channels=16,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

train_pipeline = [
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    # per process: with 2 processes the gradients average over 64 images, but each process's BatchNorm
    # normalises with its own 32 (not the same training as one process with 64; docs/reproducing.md)
    batch_size=32,
    num_workers=0,
    dataset=dict(
        type='snl_mm.RelationDataset', split='train', num_samples=num_train, pipeline=train_pipeline,
        **relation),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=100,
    num_workers=0,
    dataset=dict(
        type='snl_mm.RelationDataset', split='val', num_samples=num_val, pipeline=test_pipeline,
        **relation),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# ---- schedule: SGD, one epoch of linear warm-up, then a cosine decay to the end ----
max_epochs = 6
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, T_max=max_epochs - 1,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
# BatchNorm statistics are averaged over the processes after every epoch, so all ranks end identical
custom_hooks = [dict(type='SyncBuffersHook')]
randomness = dict(seed=0, deterministic=False)
