# CIFAR-100, PreResNet-56 + a CGNL block with the dot-product kernel, one group, right after the second residual
# block of the first stage (res1). A variant, not a row of the paper: its "CGNL" rows use the Gaussian kernel
# (preresnet56-cgnl_8xb16-300e_cifar100.py).
_base_ = ['./preresnet56_8xb16-300e_cifar100.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.cgnl_dot)]))
