# CIFAR-100, PreResNet-56 + a double-attention block (Chen et al. 2018): the block in the second stage, the
# paper's Table 3 ("Stage 2"), row "+ A^2". Everything else as the main setting (Sec. 3.1).
_base_ = '../preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='A2Block', reduction=2),
                stages=(False, True, False),  # res2
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
