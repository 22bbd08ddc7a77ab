# UCF-101 split 1, mmaction2's R(2+1)D-34 from Kinetics-400 + a spectral nonlocal block (SNL, the paper's Eq. 5),
# right before the last residual block of res3: the paper's Table 8 (Appendix C.1), row "P3D + Ours", on the
# closest network mmaction2 ships (see the baseline's comment).
_base_ = ['./r2plus1d_r34_k400-pretrained_8xb8-8x8x1-100e_ucf101-split1-rgb.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(_base_.placement, cfg=_base_.nonlocal_blocks.snl)]))
