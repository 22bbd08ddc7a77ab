# CIFAR-100, PreResNet-56 + a spectral nonlocal block (SNL, the paper's Eq. 5): the block in the third stage, the
# paper's Table 3 ("Stage 3"), row "+ Ours". The main config (../preresnet56-snl_8xb16-300e_cifar100.py) with one
# field of its plugin entry changed.
_base_ = '../preresnet56-snl_8xb16-300e_cifar100.py'

model = dict(backbone=dict(plugins=[dict(_base_.model.backbone.plugins[0], stages=(False, False, True))]))
