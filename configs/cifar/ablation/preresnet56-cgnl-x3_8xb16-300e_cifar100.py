# CIFAR-100, PreResNet-56 + a compact generalized nonlocal block (Yue et al. 2018), one group as the paper
# counts it: three blocks, one per stage, the paper's Table 4 (the numbers in brackets), row "+ CGNL".
# Everything else as the main setting (Sec. 3.1).
_base_ = '../preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='CGNLBlock', reduction=2, groups=1),
                stages=(True, True, True),  # one block in each of the three stages
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
