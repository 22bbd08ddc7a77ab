# UCF-101 split 1, mmaction2's TimeSformer (divided space-time attention) from Kinetics-400, with one attention
# module, the attention within frames of its fourth layer, replaced by a spectral nonlocal block (SNL, the paper's
# Eq. 5). A variant, not the paper's row: VTN's self-attention, which the paper replaces, relates the frames, and the
# row replaces TimeSformer's attention across frames in every layer
# (timesformer_divST-snl_k400-pretrained_8xb8-8x32x1-100e_ucf101-split1-rgb.py). This one changes the pretrained
# network least: one of its 24 attention modules.
_base_ = ['./timesformer_divST_k400-pretrained_8xb8-8x32x1-100e_ucf101-split1-rgb.py', '../_base_/blocks.py']

model = dict(backbone=dict(plugins=[dict(p, cfg=_base_.nonlocal_blocks.snl) for p in _base_.single_spatial_placement]))
