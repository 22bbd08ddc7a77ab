# ANN (Zhu et al. 2019): mmsegmentation's ANNNet R-50-D8 with its head as snl_mm.ANNHead, whose AFNB and APNB are the
# package's AFNBBlock and APNBBlock in mmsegmentation's concat form (110 pyramid-pooled anchors, O(N S) memory); its
# checkpoints load unchanged (same keys). The zoo's setting (4 GPUs x 2, 512x1024 crops, 40k iterations) and number to
# reproduce (mIoU 77.40).
data_root = 'data/cityscapes/'

_base_ = 'mmseg::ann/ann_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)
model = dict(decode_head=dict(type='snl_mm.ANNHead'))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
