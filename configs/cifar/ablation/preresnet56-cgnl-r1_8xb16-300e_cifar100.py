# CIFAR-100, PreResNet-56 + a CGNL block as the paper's code runs it (CGNLx: Gaussian kernel, Taylor order 2, one
# group): Cs = C ("No Reduction"), the paper's Table 2, row "+ CGNL". The main config
# (../preresnet56-cgnl_8xb16-300e_cifar100.py) with one field of its plugin entry changed.
_base_ = '../preresnet56-cgnl_8xb16-300e_cifar100.py'

model = dict(backbone=dict(plugins=[dict(
    _base_.model.backbone.plugins[0], cfg=dict(_base_.model.backbone.plugins[0].cfg, reduction=1))]))
