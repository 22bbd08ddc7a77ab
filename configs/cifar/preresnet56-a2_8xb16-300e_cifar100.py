# CIFAR-100, PreResNet-56 + the spectral paper's A2 baseline (its code's `a2` unit: relu(theta) relu(phi)^T,
# unnormalised), right after the second residual block of the first stage (res1). The paper's Tables 2-5 (Cs = C/2,
# stage 1, one block), row "+ A^2".
_base_ = ['./preresnet56_8xb16-300e_cifar100.py', '../_base_/blocks.py']

# the block starts as the released PreResNet starts it: norm weight 1, then a ReLU (configs/_base_/blocks.py)
model = dict(backbone=dict(plugins=[dict(
    _base_.placement, cfg=dict(_base_.nonlocal_blocks.a2, **_base_.released_preresnet_unit))]))
