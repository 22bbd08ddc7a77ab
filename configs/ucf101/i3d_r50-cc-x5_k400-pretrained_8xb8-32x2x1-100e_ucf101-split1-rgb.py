# UCF-101 split 1, mmaction2's I3D ResNet-50 from Kinetics-400 + a criss-cross attention block (Huang et al. 2019,
# 3D; R = 2 as CCNet): five blocks in res3 and res4, after every other residual block, as mmaction2's non-local I3D
# models. A variant, not a row of the paper, which adds one block.
_base_ = ['./i3d_r50_k400-pretrained_8xb8-32x2x1-100e_ucf101-split1-rgb.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.nonlocal_i3d_placement, cfg=_base_.nonlocal_blocks.cc)]))
