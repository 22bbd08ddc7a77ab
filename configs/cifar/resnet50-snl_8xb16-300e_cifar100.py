# CIFAR-100, ResNet-50 + a spectral nonlocal block (SNL, the paper's Eq. 5), right before the last residual block of
# res4. The paper's Table 5 (CIFAR-100 / ResNet50), row "+ Ours".
_base_ = ['./resnet50_8xb16-300e_cifar100.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.snl)]))
