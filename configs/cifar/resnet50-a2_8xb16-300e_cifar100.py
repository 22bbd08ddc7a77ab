# CIFAR-100, ResNet-50 + a double-attention block (Chen et al. 2018), right before the last residual block
# of res4. The paper's Table 5 (CIFAR-100 / ResNet50), row "+ A^2".
_base_ = './resnet50_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.ResNet_CIFAR',
        plugins=[
            dict(
                cfg=dict(type='A2Block', reduction=2),
                stages=(False, False, True, False),  # res4
                position='after_block',
                blocks=(-2, ))  # the second to last block: the block goes right before the last one
        ]))
