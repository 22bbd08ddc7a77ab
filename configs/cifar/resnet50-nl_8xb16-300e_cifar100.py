# CIFAR-100, ResNet-50 + a nonlocal block (Wang et al. 2018; embedded Gaussian as the paper's code: no 1 /
# sqrt(Cs)), right before the last residual block of res4. The paper's Table 5 (CIFAR-100 / ResNet50), row "+ NL".
_base_ = ['./resnet50_8xb16-300e_cifar100.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.nl)]))
