# CIFAR-100, PreResNet-56 + a criss-cross attention block (Huang et al. 2019; R = 2 as CCNet), right after the
# second residual block of the first stage (res1). Not in the paper's tables: offered for comparison with the same
# placement.
_base_ = ['./preresnet56_8xb16-300e_cifar100.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.cc)]))
