# ImageNet-1k, ResNet-50 + a spectral nonlocal block (SNL, the paper's Eq. 5), right before the last
# residual block of res4. The paper's Table 6, row "+ Ours".
_base_ = './resnet50_8xb32-110e_in1k.py'

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
