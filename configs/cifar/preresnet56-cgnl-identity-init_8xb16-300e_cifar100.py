# CIFAR-100, PreResNet-56 + a CGNL block (CGNLx: Gaussian, order 2, one group) where the paper's Tables 2-5 put it,
# started as the identity: its output norm zero-initialised and no activation after it, as the paper's Eq. 5 writes the
# block and as the package builds it by default. A variant, not a row of the paper: the released PreResNet, which
# produced the rows, starts the block at norm weight 1 (preresnet56-cgnl_8xb16-300e_cifar100.py;
# configs/cifar/README.md).
_base_ = ['./preresnet56_8xb16-300e_cifar100.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.cgnl)]))
