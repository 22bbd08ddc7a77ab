# DNL (Yin et al. 2020) in the FCN head: mmsegmentation's DNLNet Cityscapes setting (ResNet-50-D8, 512x1024 crops,
# 40k iterations: its dnlnet config resolves to the FCN config's settings but for the head) with its DNLHead as
# snl_mm.NonlocalHead around DNLBlock, the same head: embedded Gaussian of the whitened embeddings, 1 / sqrt(Cs),
# temperature 0.05, plus the unary term, reduction 2. The block keeps DNLHead's attribute (`dnl_block`), so the zoo's
# DNLHead checkpoints load unchanged. The number to reproduce is the zoo's (mIoU 78.61). Its pairwise term runs by
# fused attention: no N x N map at whole-image test.
_base_ = './fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(
        type='snl_mm.NonlocalHead',
        block=dict(type='DNLBlock', reduction=2, use_scale=True, mode='embedded_gaussian', temperature=0.05),
        block_name='dnl_block'))
