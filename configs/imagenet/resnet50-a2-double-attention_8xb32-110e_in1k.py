# ImageNet-1k, ResNet-50 + a double-attention block (Chen et al. 2018, `A2Block`), right before the last residual
# block of res4. The paper's Table 6, row "+ A^2" (77.00). As for "+ NL", Sec. 3.2 says "other baselines are
# reported with the scores in their paper", so the block is the double-attention block of A^2-Nets, not the spectral
# paper's own `a2` unit (configs/_base_/blocks.py); A^2-Nets' own placement of its blocks is not reproduced.
_base_ = ['./resnet50_8xb32-110e_in1k.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.a2_double_attention)]))
