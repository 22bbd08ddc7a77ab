# ImageNet-1k, ResNet-50 + a CGNLx block as the CGNL paper's ImageNet model (Gaussian kernel, Taylor order 3, 8
# groups), right before the last residual block of res4. The paper's Table 6, row "+ CGNL": 77.32 is the CGNL paper's
# "R-50 w/ 1 CGNLx block" (kaiyuyue/cgnl-network.pytorch, the same place in res4), which the paper quotes ("other
# baselines are reported with the scores in their paper", Sec. 3.2). Its FLOPs and size columns count a one-group
# block, the paper's own CGNL: resnet50-cgnl_8xb32-110e_in1k.py.
_base_ = ['./resnet50_8xb32-110e_in1k.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.cgnlx_g8)]))
