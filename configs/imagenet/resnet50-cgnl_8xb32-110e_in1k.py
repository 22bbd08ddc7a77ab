# ImageNet-1k, ResNet-50 + a CGNL block as the paper's code runs it (CGNLx: Gaussian kernel, Taylor order 2, one
# group), right before the last residual block of res4: the block whose added FLOPs and parameters the paper's Table
# 6 gives for "+ CGNL" (+0.41 G, +2.09 M at one group). The top-1 of that row (77.32) is the CGNL paper's own model,
# 8 groups and order 3: resnet50-cgnlx-g8_8xb32-110e_in1k.py.
_base_ = ['./resnet50_8xb32-110e_in1k.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.cgnl)]))
