# Linear (efficient) attention of Shen et al. 2021 in the FCN head: softmax over each query's channels times
# softmax over the positions of each key channel, O(N Cs^2), Cs = 256, one head. Neither mmsegmentation's model zoo
# nor the paper of Shen et al. has a Cityscapes row for this setting: there is no published number to reproduce.
data_root = 'data/cityscapes/'

_base_ = './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(type='snl_mm.NonlocalHead', block=dict(type='LinearAttentionBlock', reduction=2, heads=1)))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
