# CIFAR-100, PreResNet-56 + a nonlocal block (Wang et al. 2018, embedded Gaussian): Cs = C ("No Reduction"),
# the paper's Table 2, row "+ NL". Everything else as the main setting (Sec. 3.1).
_base_ = '../preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='NLBlock', reduction=1),
                stages=(True, False, False),  # res1
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
