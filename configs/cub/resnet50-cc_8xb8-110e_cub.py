# CUB-200-2011, ResNet-50 from ImageNet weights + a criss-cross attention block (Huang et al. 2019; R = 2 as
# CCNet), right before the last residual block of res4. Not in the paper's tables: offered for comparison
# with the same placement.
_base_ = './resnet50_8xb8-110e_cub.py'

model = dict(
    backbone=dict(
        type='snl_mm.ResNet',
        plugins=[
            dict(
                cfg=dict(type='CCBlock', recurrence=2),
                stages=(False, False, True, False),  # res4
                position='after_block',
                blocks=(-2, ))  # the second to last block: the block goes right before the last one
        ]))
