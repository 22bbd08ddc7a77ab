# NL (Wang et al. 2018) in the FCN head: mmsegmentation's NLHead (embedded Gaussian, reduction 2, scaled),
# as snl_mm.NonlocalHead; its checkpoints load unchanged (same keys under decode_head.nl_block).
data_root = 'data/cityscapes/'

_base_ = './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(
        type='snl_mm.NonlocalHead',
        block=dict(type='NLBlock', reduction=2, use_scale=True, mode='embedded_gaussian')))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
