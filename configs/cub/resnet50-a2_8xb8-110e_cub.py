# CUB-200-2011, ResNet-50 from ImageNet weights + the spectral paper's A2 baseline (its code's `a2` unit:
# relu(theta) relu(phi)^T, unnormalised), right before the last residual block of res4. The paper's Table 7
# (CUB-200), row "+ A^2".
_base_ = ['./resnet50_8xb8-110e_cub.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.a2)]))
