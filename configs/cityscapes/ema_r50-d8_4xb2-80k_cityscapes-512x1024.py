# EMANet (Li et al. 2019): mmsegmentation's EMANet R-50-D8 config (80k, the model zoo's Cityscapes schedule) with its
# decode head as snl_mm.EMAHead, the same head with the package's EMABlock (64 bases, 3 EM iterations, momentum
# 0.1; rank-64 affinity applied through its factors). mmsegmentation's EMAHead checkpoints load unchanged (their
# ema_mid_conv, ema_module and ema_out_conv keys are moved under ema_block when loaded).
data_root = 'data/cityscapes/'

_base_ = 'mmseg::emanet/emanet_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)
model = dict(decode_head=dict(type='snl_mm.EMAHead'))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
