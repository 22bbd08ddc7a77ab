# CIFAR-100, PreResNet-56 + a compact generalized nonlocal block (Yue et al. 2018), one group as the paper
# counts it, right after the second residual block of the first stage (res1). The paper's Tables 2-5 (Cs =
# C/2, stage 1, one block), row "+ CGNL".
_base_ = './preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='CGNLBlock', reduction=2, groups=1),
                stages=(True, False, False),  # res1, the first of the three stages
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
