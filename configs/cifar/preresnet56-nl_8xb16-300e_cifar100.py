# CIFAR-100, PreResNet-56 + a nonlocal block (Wang et al. 2018; embedded Gaussian as the paper's code: no 1 /
# sqrt(Cs)), right after the second residual block of the first stage (res1). The paper's Tables 2-5 (Cs = C/2,
# stage 1, one block), row "+ NL".
_base_ = ['./preresnet56_8xb16-300e_cifar100.py', '../_base_/blocks.py']

# the block starts as the released PreResNet starts it: norm weight 1, then a ReLU (configs/_base_/blocks.py)
model = dict(backbone=dict(plugins=[dict(
    _base_.placement, cfg=dict(_base_.nonlocal_blocks.nl, **_base_.released_preresnet_unit))]))
