# DNL (Yin et al. 2020) in the FCN head: mmsegmentation's own DNLNet Cityscapes config (ResNet-50-D8, 512x1024 crops,
# 40k iterations) with its DNLHead as snl_mm.NonlocalHead around DNLBlock, the same head: embedded Gaussian of the
# whitened embeddings, 1 / sqrt(Cs), temperature 0.05, plus the unary term, reduction 2. The block keeps DNLHead's
# attribute (`dnl_block`), so the zoo's DNLHead checkpoints load unchanged. The number to reproduce is the zoo's
# (mIoU 78.61). Its pairwise term runs by fused attention: no N x N map at whole-image test.
_base_ = 'mmseg::dnlnet/dnl_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)
data_root = 'data/cityscapes/'

model = dict(
    decode_head=dict(
        _delete_=True,  # DNLHead's own arguments (reduction, use_scale, mode, temperature) move into the block
        type='snl_mm.NonlocalHead',
        block=dict(type='DNLBlock', reduction=2, use_scale=True, mode='embedded_gaussian', temperature=0.05),
        block_name='dnl_block',
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
