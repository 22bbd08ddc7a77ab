# UCF-101 split 1 (extracted frames), I3D ResNet-50 from Kinetics-400 + nonlocal stages (Tao et al. 2018) in
# res3 and res4, after every other residual block as mmaction2's I3D non-local models. The paper's Table 7
# (UCF-101), row "+ NS".
_base_ = './i3d_r50_k400-pretrained_8xb8-32x2x1-100e_ucf101-split1-rawframes.py'

model = dict(
    backbone=dict(
        type='snl_mm.ResNet3d',
        plugins=[
            dict(
                cfg=dict(type='NSBlock', reduction=2),
                stages=(False, True, True, False),  # res3 and res4
                position='after_block',
                # mmaction2's non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0))
                blocks=((), (1, 3), (1, 3, 5), ()))
        ]))
