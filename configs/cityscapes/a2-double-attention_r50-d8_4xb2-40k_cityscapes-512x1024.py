# A2: the double-attention block of Chen et al. 2018 (A^2-Nets, `A2Block`) in the FCN head.
data_root = 'data/cityscapes/'

_base_ = './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(type='snl_mm.NonlocalHead', block=dict(type='A2Block', reduction=2)))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
