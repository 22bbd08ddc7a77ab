# UCF-101 split 1 (videos), mmaction2's I3D ResNet-50 from Kinetics-400 + a CGNL block as the paper's code runs it
# (CGNLx: Gaussian kernel, Taylor order 2, one group): one block, right before the last residual block of res4, as
# the paper places it. The I3D variant of the paper's Table 7 (UCF-101) row "+ CGNL": the paper's network is Hara's
# 3D ResNet (r3d50-cgnl_k400-pretrained_8xb8-16x1x1-100e_ucf101-split1-rgb.py).
_base_ = ['./i3d_r50_k400-pretrained_8xb8-32x2x1-100e_ucf101-split1-rgb.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.cgnl)]))
