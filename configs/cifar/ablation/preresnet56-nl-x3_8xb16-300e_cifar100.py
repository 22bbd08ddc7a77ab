# CIFAR-100, PreResNet-56 + a nonlocal block (Wang et al. 2018; embedded Gaussian as the paper's code: no 1 /
# sqrt(Cs)): three blocks, one per stage, the paper's Table 4 (the numbers in brackets), row "+ NL". The main config
# (../preresnet56-nl_8xb16-300e_cifar100.py) with one field of its plugin entry changed.
_base_ = '../preresnet56-nl_8xb16-300e_cifar100.py'

model = dict(backbone=dict(plugins=[dict(_base_.model.backbone.plugins[0], stages=(True, True, True))]))
