# ImageNet-1k, ResNet-50 + a disentangled nonlocal block (DNL, Yin et al. 2020: whitened embedded Gaussian with
# temperature 0.05 plus the unary term, Cs = C / 2), right before the last residual block of res4: the paper's
# placement of Table 6. Not a row of the paper's Table 6, and DNL's paper reports no ImageNet classification number
# (no published number for this placement).
_base_ = ['./resnet50_8xb32-110e_in1k.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.dnl)]))
