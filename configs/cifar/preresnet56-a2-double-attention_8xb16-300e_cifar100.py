# CIFAR-100, PreResNet-56 + the double-attention block of Chen et al. 2018 (A^2-Nets, `A2Block`), right after the
# second residual block of the first stage (res1). A variant, not a row of the paper: the paper's "A^2" rows come
# from its own `a2` unit (preresnet56-a2_8xb16-300e_cifar100.py).
_base_ = ['./preresnet56_8xb16-300e_cifar100.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.a2_double_attention)]))
