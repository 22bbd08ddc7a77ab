# UCF-101 split 1, mmaction2's TimeSformer (divided space-time attention) from Kinetics-400, with the attention across
# frames of all twelve layers replaced by spectral nonlocal blocks (SNL, the paper's Eq. 5): the paper's Table 8
# (Appendix C.1), row "VTN + Ours", on the closest network mmaction2 ships (see the baseline's comment).
_base_ = ['./timesformer_divST_k400-pretrained_8xb8-8x32x1-100e_ucf101-split1-rgb.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(p, cfg=_base_.nonlocal_blocks.snl) for p in _base_.placement]))
