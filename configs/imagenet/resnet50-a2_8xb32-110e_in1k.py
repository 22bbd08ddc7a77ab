# The former name of resnet50-a2-double-attention_8xb32-110e_in1k.py (the double-attention block of A^2-Nets, the
# paper's Table 6 row "+ A^2"), kept so that references to it resolve. Elsewhere `-a2` names the spectral paper's
# `a2` unit; `-a2-double-attention` names `A2Block` in every folder.
_base_ = './resnet50-a2-double-attention_8xb32-110e_in1k.py'
