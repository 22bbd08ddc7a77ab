# UCF-101 split 1, mmaction2's I3D ResNet-50 from its Kinetics-400 checkpoint, without a nonlocal block: the I3D
# variant of the paper's UCF-101 backbone. The paper's network is the 3D ResNet of Hara et al. 2018, with full
# k x k x k kernels (r3d50_k400-pretrained_8xb8-16x1x1-100e_ucf101-split1-rgb.py); mmaction2's I3D inflates its
# kernels to 3x1x1 and 1x3x3 in every other block, pools time after res2 and reads 32 frames at 224 x 224. The
# i3d_r50-* configs put their block where the paper puts it (`placement`); the i3d_r50-*-x5 configs use mmaction2's
# non-local I3D pattern (`nonlocal_i3d_placement`). Videos are decoded on the fly (VideoDataset); the *-rawframes
# configs read extracted frames instead.
_base_ = [
    'mmaction::_base_/models/i3d_r50.py',
    'mmaction::_base_/schedules/sgd_100e.py',  # lr 0.01, / 10 at 40 and 80, 100 epochs
    'mmaction::_base_/default_runtime.py',
    '../_base_/datasets/ucf101_split1_videos.py',
]
custom_imports = dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

# ---- checkpoint ----
# mmaction2's Kinetics-400 I3D ResNet-50, downloaded beforehand (nothing is downloaded at run time):
# https://download.openmmlab.com/mmaction/v1.0/recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb_20220812-e213c223.pth  # noqa: E501
k400_checkpoint = ('checkpoints/'
                   'i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb_20220812-e213c223.pth')

# The whole recognizer loads from the Kinetics checkpoint (the 400-class head is skipped for its shape, the
# blocks keep their identity initialisation); no ImageNet inflation, hence no torchvision download.
model = dict(backbone=dict(pretrained=None, pretrained2d=False), cls_head=dict(num_classes=101))
load_from = k400_checkpoint
auto_scale_lr = dict(enable=False, base_batch_size=64)

# ---- schedule (paper, Sec. 3.2): "the initial learning rate of 0.01 which is subsequently divided by 10 each 40
# epochs. The training stops at the 100 epochs"; momentum 0.9 and weight decay 1e-4 as Sec. 3.1: mmaction2's
# sgd_100e schedule, inherited above, without the gradient clipping at norm 40 it adds (mmaction2's I3D recipe; the
# paper clips nothing, and neither does its code, SNL-Classification/train_val.py:471-474) ----
optim_wrapper = dict(clip_grad=None)
# ---- evaluation as the paper's code evaluates (train_val.py:417-426; "other hyper-parameters ... are the same as
# in Sec. 3.1"): every 5 epochs, the best top-1 (and, separately, the best top-5) with its checkpoint ----
train_cfg = dict(val_interval=5)
default_hooks = dict(checkpoint=dict(interval=5, max_keep_ckpts=5, save_best=['acc/top1', 'acc/top5'],
                                     rule='greater'))

# ---- where the block configs put their block: one block ("add 1 nonlocal-based block", Sec. 3.1), right before the
# last residual block of res4, where the paper puts it in every other ResNet (Sec. 3.2, Appendix C.2) ----
placement = dict(stages=(False, False, True, False), position='after_block', blocks=(-2, ))
# mmaction2's non-local I3D models: five blocks in res3 and res4, after every other residual block, as its
# non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0)) (the i3d_r50-*-x5 variants)
nonlocal_i3d_placement = dict(stages=(False, True, True, False), position='after_block',
                              blocks=((), (1, 3), (1, 3, 5), ()))
