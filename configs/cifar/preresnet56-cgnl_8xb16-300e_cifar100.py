# CIFAR-100, PreResNet-56 + a CGNL block as the paper's code runs it (CGNLx: Gaussian kernel, Taylor order 2, one
# group), right after the second residual block of the first stage (res1). The paper's Tables 2-5 (Cs = C/2, stage
# 1, one block), row "+ CGNL".
_base_ = ['./preresnet56_8xb16-300e_cifar100.py', '../_base_/blocks.py']

# the block starts as the released PreResNet starts it: GroupNorm weight 1, no activation after it
# (configs/_base_/blocks.py)
model = dict(backbone=dict(plugins=[dict(
    _base_.placement, cfg=dict(_base_.nonlocal_blocks.cgnl, **_base_.released_preresnet_init))]))
