# CUB-200-2011, ResNet-50 from ImageNet weights + a criss-cross attention block (Huang et al. 2019; R = 2 as CCNet),
# right before the last residual block of res4. Not in the paper's tables: offered for comparison with the same
# placement.
_base_ = ['./resnet50_8xb8-110e_cub.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.cc)]))
