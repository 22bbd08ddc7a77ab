# DANet (Fu et al. 2019): mmsegmentation's DANet R-50-D8 config (40k) with its decode head as snl_mm.DAHead, the same
# head with the package's PAMBlock (position attention by fused attention, never an N x N map) and CAMBlock (channel
# attention on the C x C channel graph). mmsegmentation's DAHead checkpoints load unchanged.
data_root = 'data/cityscapes/'

_base_ = 'mmseg::danet/danet_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)
model = dict(decode_head=dict(type='snl_mm.DAHead'))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
