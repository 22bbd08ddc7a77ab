# CIFAR-100, PreResNet-56 + a nonlocal block (Wang et al. 2018, embedded Gaussian): the block in the third
# stage, the paper's Table 3 ("Stage 3"), row "+ NL". Everything else as the main setting (Sec. 3.1).
_base_ = '../preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='NLBlock', reduction=2),
                stages=(False, False, True),  # res3
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
