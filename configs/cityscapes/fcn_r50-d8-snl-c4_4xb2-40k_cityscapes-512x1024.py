# SNL blocks inside mmsegmentation's own ResNetV1c through its plugins= field: one SNLBlock after conv3 of
# every bottleneck of res4 (before the residual addition), with the plain FCN head. The blocks start as the
# identity, so the ImageNet-pretrained backbone computes what it computed before until they train; for that
# they have no activation after their zero-initialised norm (a ReLU there would pass no gradient).
data_root = 'data/cityscapes/'

_base_ = './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    backbone=dict(
        plugins=[
            dict(cfg=dict(type='SNLBlock', reduction=2, act_cfg=None),
                 stages=(False, False, True, False),
                 position='after_conv3')
        ]))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
