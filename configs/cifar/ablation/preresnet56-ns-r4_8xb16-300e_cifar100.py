# CIFAR-100, PreResNet-56 + a nonlocal stage (Tao et al. 2018): Cs = C/4 ("Reduction by Four Times"), the paper's
# Table 2, row "+ NS". The main config (../preresnet56-ns_8xb16-300e_cifar100.py) with one field of its plugin entry
# changed.
_base_ = '../preresnet56-ns_8xb16-300e_cifar100.py'

model = dict(backbone=dict(plugins=[dict(
    _base_.model.backbone.plugins[0], cfg=dict(_base_.model.backbone.plugins[0].cfg, reduction=4))]))
