# GCNet (Cao et al. 2019) in the FCN head: mmsegmentation's own GCNet Cityscapes config (ResNet-50-D8, 512x1024 crops,
# 40k iterations) with its GCHead as snl_mm.NonlocalHead around GCBlock, the same head: attention pooling, a bottleneck
# of channels / 4 with LayerNorm, channel_add. The block keeps GCHead's attribute (`gc_block`), so the zoo's GCHead
# checkpoints load unchanged. The number to reproduce is the zoo's (mIoU 77.69).
_base_ = 'mmseg::gcnet/gcnet_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)
data_root = 'data/cityscapes/'

model = dict(
    decode_head=dict(
        _delete_=True,  # GCHead's own arguments (ratio, pooling_type, fusion_types) move into the block
        type='snl_mm.NonlocalHead',
        block=dict(type='GCBlock', ratio=1 / 4., pooling_type='att', fusion_types=('channel_add', )),
        block_name='gc_block',
        in_channels=2048,
        in_index=3,
        channels=512,
        num_convs=2,
        concat_input=True,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
