# CIFAR-100, PreResNet-56 + a spectral nonlocal block (SNL, the paper's Eq. 5): three blocks, one per stage,
# the paper's Table 4 (the numbers in brackets), row "+ Ours". Everything else as the main setting (Sec.
# 3.1).
_base_ = '../preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='SNLBlock', reduction=2),
                stages=(True, True, True),  # one block in each of the three stages
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
