# CIFAR-100, PreResNet-56 + a nonlocal block (Wang et al. 2018, embedded Gaussian), right after the second
# residual block of the first stage (res1). The paper's Tables 2-5 (Cs = C/2, stage 1, one block), row "+
# NL".
_base_ = './preresnet56_8xb16-300e_cifar100.py'

model = dict(
    backbone=dict(
        type='snl_mm.PreResNet',
        plugins=[
            dict(
                cfg=dict(type='NLBlock', reduction=2),
                stages=(True, False, False),  # res1, the first of the three stages
                position='after_block',
                blocks=(1, ))  # after the second residual block
        ]))
