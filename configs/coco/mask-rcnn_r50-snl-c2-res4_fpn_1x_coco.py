# Mask R-CNN, ResNet-50 FPN (mmdetection's 1x schedule) + an SNL block (the paper's Eq. 5, Cs = C/2) inside each
# of the six residual blocks of res4, after its 3x3 convolution, through mmdetection's own ResNet
# `plugins=` (position 'after_conv2'; mmdetection's GCNet configs use the same mechanism after_conv3).
# snl_mm checks the entry before mmdetection builds it; the ResNet stays mmdetection's.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

model = dict(
    backbone=dict(plugins=[
        dict(cfg=dict(type='SNLBlock', reduction=2), stages=(False, False, True, False), position='after_conv2')
    ]))
