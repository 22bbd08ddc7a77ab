# GCNet (Cao et al. 2019) in the FCN head: mmsegmentation's GCNet Cityscapes setting (ResNet-50-D8, 512x1024 crops,
# 40k iterations: its gcnet config resolves to the FCN config's settings but for the head) with its GCHead as
# snl_mm.NonlocalHead around GCBlock, the same head: attention pooling, a bottleneck of channels / 4 with LayerNorm,
# channel_add. The block keeps GCHead's attribute (`gc_block`), so the zoo's GCHead checkpoints load unchanged. The
# number to reproduce is the zoo's (mIoU 77.69).
_base_ = './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(
        type='snl_mm.NonlocalHead',
        block=dict(type='GCBlock', ratio=1 / 4., pooling_type='att', fusion_types=('channel_add', )),
        block_name='gc_block'))
