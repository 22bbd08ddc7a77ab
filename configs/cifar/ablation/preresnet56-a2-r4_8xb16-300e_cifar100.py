# CIFAR-100, PreResNet-56 + the spectral paper's A2 baseline (its code's `a2` unit: relu(theta) relu(phi)^T,
# unnormalised): Cs = C/4 ("Reduction by Four Times"), the paper's Table 2, row "+ A^2". The main config
# (../preresnet56-a2_8xb16-300e_cifar100.py) with one field of its plugin entry changed.
_base_ = '../preresnet56-a2_8xb16-300e_cifar100.py'

model = dict(backbone=dict(plugins=[dict(
    _base_.model.backbone.plugins[0], cfg=dict(_base_.model.backbone.plugins[0].cfg, reduction=4))]))
