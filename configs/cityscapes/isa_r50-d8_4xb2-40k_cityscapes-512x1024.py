# ISA (Huang et al. 2019, interlaced sparse self-attention): mmsegmentation's ISANet R-50-D8 with its head as
# snl_mm.ISAHead, whose relations are the package's ISABlock in mmsegmentation's concat form (8 x 8 cells, any map
# size); mmsegmentation's ISAHead checkpoints load through the head's key map. The zoo's setting (4 GPUs x 2, 512x1024
# crops, 40k iterations) and number to reproduce (mIoU 78.49).
data_root = 'data/cityscapes/'

_base_ = 'mmseg::isanet/isanet_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)
model = dict(decode_head=dict(type='snl_mm.ISAHead'))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
