# The embedded demo: the first stage of PreResNet-20 + one SNL block right after its second residual block
# (the paper's CIFAR placement, Sec. 3.1), Cs = C/2, on RelationDataset; everything else as the baseline.
_base_ = './preresnet20_relation.py'

model = dict(
    backbone=dict(plugins=[
        dict(cfg=dict(type='SNLBlock', reduction=2), stages=(True, ), position='after_block', blocks=(1, ))
    ]))
