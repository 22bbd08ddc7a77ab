# FCN baseline: ResNet-50-D8 (ResNetV1c, dilated res4/res5), Cityscapes 512x1024, 40k iterations, 4 GPUs x 2.
# The nonlocal-head configs of this folder inherit it and only change the decode head.
data_root = 'data/cityscapes/'

_base_ = 'mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
