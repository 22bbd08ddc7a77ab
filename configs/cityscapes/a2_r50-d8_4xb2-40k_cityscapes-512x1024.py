# The former name of a2-double-attention_r50-d8_4xb2-40k_cityscapes-512x1024.py (the double-attention block of
# A^2-Nets in the FCN head), kept so that references to it resolve. `-a2` names the spectral paper's `a2` unit in
# the configs of its tables; `a2-double-attention` names `A2Block` in every folder.
_base_ = './a2-double-attention_r50-d8_4xb2-40k_cityscapes-512x1024.py'
