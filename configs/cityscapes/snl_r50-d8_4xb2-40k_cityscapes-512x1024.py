# SNL (the spectral nonlocal block) in the FCN head: the official SNL Cityscapes setting of the paper's code
# (SNLHead: FCN head, channels 512, one SNL unit with reduction 2 and ReLU after its norm, concat input;
# ResNet-50-D8, 512x1024 crops, 40k iterations, SGD lr 0.01 poly). The official unit is initialised as
# below (Kaiming fan-out convs, norm weight 1), not as the identity: a ReLU after a zero-initialised norm
# passes no gradient, so an identity-initialised unit with ReLU would never train.
data_root = 'data/cityscapes/'

_base_ = './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(
        type='snl_mm.NonlocalHead',
        block=dict(
            type='SNLBlock',
            reduction=2,
            act_cfg=dict(type='ReLU'),
            init_cfg=[
                dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu',
                     distribution='normal'),
                dict(type='Constant', layer=['_BatchNorm', 'GroupNorm'], val=1, bias=0)
            ])))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
