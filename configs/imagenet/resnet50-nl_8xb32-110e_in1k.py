# ImageNet-1k, ResNet-50 + a nonlocal block (Wang et al. 2018: embedded Gaussian, scaled by 1 / sqrt(Cs)), right
# before the last residual block of res4. The paper's Table 6, row "+ NL" (76.70). Sec. 3.2 says "other baselines are
# reported with the scores in their paper", so the block is Wang et al.'s own, not the unscaled, bias-free one of the
# paper's code (configs/_base_/blocks.py): scaled, and with biases in theta, phi and g (facebookresearch/
# video-nonlocal-net, lib/core/config.py:199 `NONLOCAL.NO_BIAS = 0`, lib/models/nonlocal_helper.py:33, 55, 65).
_base_ = ['./resnet50_8xb32-110e_in1k.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(
    _base_.placement, cfg=dict(_base_.nonlocal_blocks.nl, use_scale=True, bias=True))]))
