# CIFAR-10, ResNet-50 + a CGNL block as the paper's code runs it (CGNLx: Gaussian kernel, Taylor order 2, one
# group), right before the last residual block of res4. The paper's Table 5 (CIFAR-10 / ResNet50), row "+ CGNL".
_base_ = ['./resnet50_8xb16-300e_cifar10.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.cgnl)]))
