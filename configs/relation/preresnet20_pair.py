# The pair task of the benchmark of long-range relations (tools/analysis/compare_blocks.py --task pair): the demo's
# network (the first stage of PreResNet-20: a 3x3 stem and three pre-activation residual blocks at full
# resolution, receptive field 15 px) on RelationDataset at 24 x 24: two objects of 5 px whose centres lie at least
# 15 px apart, so no window of the network holds both whole; label "same colour" or "different". The schedule is
# sized so that the baseline and the six blocks, three seeds each, train in about a quarter of an hour on two CPU
# cores. `block_site` says where compare_blocks.py inserts the block under test (the demo's place, the paper's
# CIFAR placement: after the second residual block of the first stage).
_base_ = '../demo/preresnet20_relation.py'

relation = dict(img_size=24, object_size=5, min_distance=15, num_colors=6, noise_std=10, seed=0)
num_train, num_val, num_test = 3200, 500, 1000
max_epochs = 4

train_dataloader = dict(batch_size=16, dataset=dict(num_samples=num_train, **relation))
val_dataloader = dict(dataset=dict(num_samples=num_val, **relation))
test_dataloader = dict(dataset=dict(split='test', num_samples=num_test, **relation))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, T_max=max_epochs - 1,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))

block_site = dict(stages=(True, ), position='after_block', blocks=(1, ))
