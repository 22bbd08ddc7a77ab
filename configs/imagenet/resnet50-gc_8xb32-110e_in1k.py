# ImageNet-1k, ResNet-50 + a global context block (GCNet, Cao et al. 2019: attention pooling, bottleneck C / 16 with
# LayerNorm, channel_add), right before the last residual block of res4: the paper's placement of Table 6. Not a row
# of the paper's Table 6; GCNet's own ImageNet numbers put a block in every residual block of res3-res5 (no
# published number for this placement).
_base_ = ['./resnet50_8xb32-110e_in1k.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.gc)]))
