# Mask R-CNN, ResNet-50 FPN (mmdetection's 1x schedule) + one NL block (embedded Gaussian, Cs = C/2) right
# before the last residual block of res4: the placement of Wang et al. (2018), "Non-local Neural Networks",
# Sec. 6 (COCO), whose R-50 row reports box AP 39.0 and mask AP 35.5 with it (Table 5). The ResNet is
# mmdetection's, wrapped by snl_mm.PluginBackbone: mmdetection's own `plugins=` can only put a block inside
# every residual block of a stage (after_conv1/2/3), not between two of them.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='snl_mm.PluginBackbone',
        backbone={{_base_.model.backbone}},  # mmdetection's ResNet-50, unchanged (ImageNet weights included)
        plugins=[
            # after the fifth of the six residual blocks of res4 (layer3), i.e. right before the last one
            dict(cfg=dict(type='NLBlock', reduction=2), after='layer3.4')
        ]))
