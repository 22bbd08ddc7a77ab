# UCF-101 split 1, the 3D ResNet-50 of Hara et al. 2018 from Kinetics-400 + the spectral paper's A2 baseline (its
# code's `a2` unit: relu(theta) relu(phi)^T, unnormalised): one block, right before the last residual block of res4.
# The paper's Table 7 (UCF-101), row "+ A^2".
_base_ = ['./r3d50_k400-pretrained_8xb8-16x1x1-100e_ucf101-split1-rgb.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.a2)]))
