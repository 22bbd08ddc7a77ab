# CUB-200-2011, ResNet-50 from ImageNet weights + a spectral nonlocal block (SNL, the paper's Eq. 5), right
# before the last residual block of res4. The paper's Table 7 (CUB-200), row "+ Ours".
_base_ = './resnet50_8xb8-110e_cub.py'

model = dict(
    backbone=dict(
        type='snl_mm.ResNet',
        plugins=[
            dict(
                cfg=dict(type='SNLBlock', reduction=2),
                stages=(False, False, True, False),  # res4
                position='after_block',
                blocks=(-2, ))  # the second to last block: the block goes right before the last one
        ]))
