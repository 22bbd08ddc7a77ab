# The same detector and placement as mask-rcnn_r50-nl_fpn_1x_coco.py (one block right before the last
# residual block of res4, Wang et al. 2018), with an SNL block (the paper's Eq. 5, Cs = C/2) in place of NL.
_base_ = './mask-rcnn_r50-nl_fpn_1x_coco.py'

model = dict(backbone=dict(plugins=[dict(cfg=dict(type='SNLBlock', reduction=2), after='layer3.4')]))
