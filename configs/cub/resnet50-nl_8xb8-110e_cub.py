# CUB-200-2011, ResNet-50 from ImageNet weights + a nonlocal block (Wang et al. 2018; embedded Gaussian as the
# paper's code: no 1 / sqrt(Cs)), right before the last residual block of res4. The paper's Table 7 (CUB-200), row
# "+ NL".
_base_ = ['./resnet50_8xb8-110e_cub.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.nl)]))
