# CIFAR-100, PreResNet-56 + a compact generalized nonlocal block (Yue et al. 2018), one group as the paper
# counts it: Cs = C ("No Reduction"), the paper's Table 2, row "+ CGNL". Everything else as the main setting
# (Sec. 3.1).
_base_ = '../preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='CGNLBlock', reduction=1, groups=1),
                stages=(True, False, False),  # res1
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
