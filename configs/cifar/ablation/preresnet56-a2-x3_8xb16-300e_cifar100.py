# CIFAR-100, PreResNet-56 + a double-attention block (Chen et al. 2018): three blocks, one per stage, the
# paper's Table 4 (the numbers in brackets), row "+ A^2". Everything else as the main setting (Sec. 3.1).
_base_ = '../preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='A2Block', reduction=2),
                stages=(True, True, True),  # one block in each of the three stages
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
