"""One block, added by config, in every backbone mmpretrain, mmaction2 and mmsegmentation register and build from
one of their shipped configs (see ``matrix.py`` for the rule that picks a middle position and the checks); the
backbones take the package's blocks of the catalogue in turn (``matrix.MATRIX_BLOCKS``: every registered block
that takes a single map, each at least once). Without ``plugins`` every one of them builds as upstream builds it.

Each backbone is taken from the smallest of its shipped configs; ``SHRINK`` makes a few large ones smaller for a
CPU test (fewer layers, a smaller input), without changing their class. ``EXCLUDED`` lists, with the reason, the
registered backbones no shipped config builds here or whose input is not a map of positions.
"""
import pytest
import torch
from mmengine.registry import MODELS, init_default_scope

from snl_mm.utils import mmseg_available
from tests.backbones.matrix import MATRIX_BLOCKS, backbone_config, block_config, check_backbone

CONFIGS = {
    'mmpretrain': {
        'BEiTViT': 'beit/benchmarks/beit-base-p16_8xb64_in1k.py',
        'CSPDarkNet': 'cspnet/cspdarknet50_8xb32_in1k.py',
        'CSPResNeXt': 'cspnet/cspresnext50_8xb32_in1k.py',
        'CSPResNet': 'cspnet/cspresnet50_8xb32_in1k.py',
        'Conformer': 'conformer/conformer-tiny-p16_8xb128_in1k.py',
        'ConvMixer': 'convmixer/convmixer-768-32_10xb64_in1k.py',
        'ConvNeXt': 'convnext_v2/convnext-v2-nano_32xb32_in1k.py',
        'DaViT': 'davit/davit-tiny_4xb256_in1k.py',
        'DeiT3': 'deit3/deit3-small-p16_64xb64_in1k.py',
        'DenseNet': 'densenet/densenet121_4xb256_in1k.py',
        'DistilledVisionTransformer': 'deit/deit-tiny-distilled_4xb256_in1k.py',
        'EdgeNeXt': 'edgenext/edgenext-xxsmall_8xb256_in1k.py',
        'EfficientFormer': 'efficientformer/efficientformer-l1_8xb128_in1k.py',
        'EfficientNet': 'efficientnet/efficientnet-b0_8xb32_in1k.py',
        'EfficientNetV2': 'efficientnet_v2/efficientnetv2-b0_8xb32_in1k.py',
        'HRNet': 'hrnet/hrnet-w18_4xb32_in1k.py',
        'HiViT': 'hivit/hivit-tiny-p16_16xb64_in1k.py',
        'HorNet': 'hornet/hornet-tiny_8xb128_in1k.py',
        'InceptionV3': 'inception_v3/inception-v3_8xb32_in1k.py',
        'LeNet5': 'lenet/lenet5_mnist.py',
        'LeViT': 'levit/levit-128_8xb256_in1k.py',
        'MViT': 'mvit/mvitv2-tiny_8xb256_in1k.py',
        'MixMIMTransformer': 'mixmim/benchmarks/mixmim-base_8xb64_in1k.py',
        'MlpMixer': 'mlp_mixer/mlp-mixer-base-p16_64xb64_in1k.py',
        'MobileNetV2': 'mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
        'MobileNetV3': 'mobilenet_v3/mobilenet-v3-small-050_8xb128_in1k.py',
        'MobileOne': 'mobileone/mobileone-s0_8xb32_in1k.py',
        'MobileViT': 'mobilevit/mobilevit-xxsmall_8xb128_in1k.py',
        'PCPVT': 'twins/twins-pcpvt-small_8xb128_in1k.py',
        'PoolFormer': 'poolformer/poolformer-s12_32xb128_in1k.py',
        'PyramidVig': 'vig/pvig-tiny_8xb128_in1k.py',
        'RIFormer': 'riformer/riformer-s12_8xb128_in1k.py',
        'RegNet': 'regnet/regnetx-400mf_8xb128_in1k.py',
        'RepLKNet': 'replknet/replknet-31L_32xb64_in1k-384px.py',
        'RepMLPNet': 'repmlp/repmlp-base_8xb64_in1k.py',
        'RepVGG': 'repvgg/repvgg-A0_8xb32_in1k.py',
        'Res2Net': 'res2net/res2net50-w14-s8_8xb32_in1k.py',
        'ResNeSt': 'resnest/resnest50_32xb64_in1k.py',
        'ResNeXt': 'resnext/resnext50-32x4d_8xb32_in1k.py',
        'ResNet': 'resnet/resnet18_8xb32_in1k.py',
        'ResNetV1c': 'resnet/resnetv1c50_8xb32_in1k.py',
        'ResNetV1d': 'resnet/resnetv1d50_8xb32_in1k.py',
        'ResNet_CIFAR': 'resnet/resnet18_8xb16_cifar10.py',
        'RevVisionTransformer': 'revvit/revvit-small_8xb256_in1k.py',
        'SEResNeXt': 'seresnet/seresnext50-32x4d_8xb32_in1k.py',
        'SEResNet': 'seresnet/seresnet50_8xb32_in1k.py',
        'SVT': 'twins/twins-svt-small_8xb128_in1k.py',
        'ShuffleNetV1': 'shufflenet_v1/shufflenet-v1-1x_16xb64_in1k.py',
        'ShuffleNetV2': 'shufflenet_v2/shufflenet-v2-1x_16xb64_in1k.py',
        'SwinTransformer': 'swin_transformer/swin-tiny_16xb64_in1k.py',
        'SwinTransformerV2': 'swin_transformer_v2/swinv2-tiny-w8_16xb64_in1k-256px.py',
        'T2T_ViT': 't2t_vit/t2t-vit-t-14_8xb64_in1k.py',
        'TNT': 'tnt/tnt-s-p16_16xb64_in1k.py',
        'TinyViT': 'tinyvit/tinyvit-5m_8xb256_in1k.py',
        'VAN': 'van/van-tiny_8xb128_in1k.py',
        'VGG': 'vgg/vgg11_8xb32_in1k.py',
        'ViTEVA02': 'eva02/eva02-tiny-p14_headless.py',
        'ViTSAM': 'sam/vit-base-p16_sam_headless.py',
        'Vig': 'vig/vig-tiny_8xb128_in1k.py',
        'VisionTransformer': 'deit/deit-tiny_4xb256_in1k.py',
        'XCiT': 'xcit/xcit-nano-12-p8_8xb128_in1k.py',
    },
    'mmaction': {
        'C2D': 'recognition/c2d/c2d_r50-in1k-pre_8xb32-8x8x1-100e_kinetics400-rgb.py',
        'C3D': 'recognition/c3d/c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb.py',
        'MViT': 'recognition/mvit/mvit-small-p244_32xb16-16x4x1-200e_kinetics400-rgb.py',
        'MobileNetV2TSM': 'recognition/tsm/tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb.py',
        'MobileOneTSM': 'recognition/tsm/tsm_imagenet-pretrained-mobileone-s4_8xb16-1x1x16-50e_kinetics400-rgb.py',
        'OmniResNet': 'recognition/omnisource/slowonly_r50_8xb16-8x8x1-256e_imagenet-kinetics400-rgb.py',
        'ResNet': 'recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py',
        'ResNet2Plus1d': 'recognition/r2plus1d/r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb.py',
        'ResNet3d': 'recognition/i3d/i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb.py',
        'ResNet3dCSN': 'recognition/csn/ircsn_r152_32x2x1-180e_kinetics400-rgb.py',
        'ResNet3dSlowFast': 'recognition/slowfast/slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb.py',
        'ResNet3dSlowOnly': 'recognition/slowonly/slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb.py',
        'ResNetAudio': 'recognition_audio/audioonly/audioonly_r50_8xb160-64x1x1-100e_kinetics400-audio-feature.py',
        'ResNetTSM': 'recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py',
        'SwinTransformer3D': 'recognition/swin/swin-tiny-p244-w877_in1k-pre_8xb8-amp-32x2x1-30e_kinetics400-rgb.py',
        'TANet': 'recognition/tanet/tanet_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb.py',
        'TimeSformer': 'recognition/timesformer/timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb.py',
        'UniFormer': 'recognition/uniformer/uniformer-small_imagenet1k-pre_16x4x1_kinetics400-rgb.py',
        'UniFormerV2': 'recognition/uniformerv2/uniformerv2-base-p16-res224_clip_u8_kinetics710-rgb.py',
        'VisionTransformer': 'recognition/videomae/vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400.py',
        'X3D': 'recognition/x3d/x3d_s_13x6x1_facebook-kinetics400-rgb.py',
    },
    'mmseg': {
        'BEiT': 'beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py',
        'BiSeNetV1': 'bisenetv1/bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py',
        'BiSeNetV2': 'bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py',
        'CGNet': 'cgnet/cgnet_fcn_4xb4-60k_cityscapes-680x680.py',
        'DDRNet': 'ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py',
        'ERFNet': 'erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
        'FastSCNN': 'fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py',
        'HRNet': 'hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py',
        'ICNet': 'icnet/icnet_r18-d8_4xb2-80k_cityscapes-832x832.py',
        'MAE': 'mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
        'MSCAN': 'segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py',
        'MixVisionTransformer': 'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
        'MobileNetV2': 'mobilenet_v2/mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512.py',
        'MobileNetV3': 'mobilenet_v3/mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py',
        'PCPVT': 'twins/twins_pcpvt-s_uperhead_8xb4-160k_ade20k-512x512.py',
        'PIDNet': 'pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py',
        'ResNeSt': 'resnest/resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512.py',
        'ResNet': 'fcn/fcn_r50b-d8_4xb2-80k_cityscapes-769x769.py',
        'ResNetV1c': 'fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py',
        'STDCContextPathNet': 'stdc/stdc1_4xb12-80k_cityscapes-512x1024.py',
        'SVT': 'twins/twins_svt-s_uperhead_8xb2-160k_ade20k-512x512.py',
        'SwinTransformer': 'swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
        'UNet': 'unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py',
        'VisionTransformer': 'vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py',
    },
}

#: fewer layers or a smaller input for a few large backbones (their class and layout unchanged)
SHRINK = {
    ('mmpretrain', 'BEiTViT'): dict(arch=dict(embed_dims=96, num_layers=4, num_heads=4, feedforward_channels=192)),
    ('mmpretrain', 'LeNet5'): dict(probe_shape=(1, 1, 32, 32)),
    ('mmpretrain', 'ConvMixer'): dict(arch=dict(embed_dims=64, depth=4, patch_size=7, kernel_size=9)),
    ('mmpretrain', 'MlpMixer'): dict(arch=dict(embed_dims=96, num_layers=4, tokens_mlp_dims=48,
                                               channels_mlp_dims=192)),
    ('mmpretrain', 'RepLKNet'): dict(arch=dict(large_kernel_sizes=[31, 29, 27, 13], layers=[1, 1, 2, 1],
                                               channels=[32, 64, 128, 256], small_kernel=5, dw_ratio=1,
                                               ffn_ratio=4)),
    ('mmpretrain', 'RepMLPNet'): dict(arch=dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1],
                                                sharesets_nums=[1, 4, 32, 128])),
    ('mmpretrain', 'ViTSAM'): dict(arch=dict(embed_dims=96, num_layers=4, num_heads=4, feedforward_channels=192,
                                             global_attn_indexes=[1, 3]), img_size=256),
    ('mmaction', 'ResNet3dCSN'): dict(depth=50),
    ('mmaction', 'TimeSformer'): dict(num_frames=4, img_size=64, embed_dims=96, num_heads=4,
                                      num_transformer_layers=2),
    ('mmaction', 'UniFormerV2'): dict(input_resolution=64, width=96, layers=4, heads=4, return_list=[2, 3],
                                      n_layers=2, n_dim=96, n_head=4, mlp_dropout=[0.5, 0.5],
                                      clip_pretrained=False),
    ('mmaction', 'VisionTransformer'): dict(img_size=64, embed_dims=96, depth=4, num_heads=4, num_frames=8),
    ('mmpretrain', 'MixMIMTransformer'): dict(arch=dict(embed_dims=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])),
    ('mmseg', 'BEiT'): dict(img_size=(224, 224), embed_dims=96, num_layers=4, num_heads=4, out_indices=(1, 3)),
    ('mmseg', 'MAE'): dict(img_size=(224, 224), embed_dims=96, num_layers=4, num_heads=4, out_indices=(1, 3)),
    ('mmseg', 'VisionTransformer'): dict(img_size=(224, 224), embed_dims=96, num_layers=4, num_heads=4,
                                         out_indices=(1, 3)),
}

#: places chosen by hand where the rule's middle position does not reach the output at init
ENTRIES = {
    # the maps of UniFormerV2's extractor reach the output through cross-attention layers that start at zero
    ('mmaction', 'UniFormerV2'): dict(after='conv1'),
    # the rule's middle module of these transformers is an attention's softmax or dropout: its (B, heads, L, L)
    # output passes the map test, but it is no feature map, and a block over its L^2 positions costs seconds; a
    # layer's tokens are what a user gives a block
    ('mmpretrain', 'HiViT'): dict(after='blocks.6', layout=dict(type='tokens', grid=(14, 14), extra_tokens=0)),
    ('mmseg', 'BEiT'): dict(after='layers.1', layout=dict(type='tokens', grid=(14, 14), extra_tokens=1)),
    ('mmseg', 'MAE'): dict(after='layers.1', layout=dict(type='tokens', grid=(14, 14), extra_tokens=1)),
}

EXCLUDED = {
    ('mmpretrain', 'AlexNet'): 'no shipped config of mmpretrain builds it',
    ('mmpretrain', 'TIMMBackbone'): 'needs the timm package, not part of the stack',
    ('mmpretrain', 'SparseConvNeXt'): 'SparK pre-training backbone: its forward needs the mask of a pre-training '
                                      'step (ConvNeXt is covered)',
    ('mmpretrain', 'SparseResNet'): 'SparK pre-training backbone: its forward needs the mask of a pre-training step '
                                    '(ResNet is covered)',
    ('mmaction', 'MobileNetV2'): 'no shipped config of mmaction2 builds it (MobileNetV2TSM, its subclass, is covered)',
    ('mmaction', 'ResNet3dLayer'): 'no shipped config of mmaction2 builds it (a single stage, used by detection heads)',
    ('mmaction', 'ResNetTIN'): "its temporal interlace (mmcv.ops.tin_shift) has no CPU implementation",
    ('mmaction', 'AAGCN'): 'a skeleton graph network: its nodes are body joints, not the positions of a map',
    ('mmaction', 'STGCN'): 'a skeleton graph network: its nodes are body joints, not the positions of a map',
    ('mmaction', 'RGBPoseConv3D'): 'two inputs (RGB clip and pose heatmaps); each pathway is a ResNet3dSlowOnly '
                                   '(covered)',
    ('mmseg', 'DeconvModule'): "a building block of UNet's decoder, registered with the backbones (UNet is covered)",
    ('mmseg', 'InterpConv'): "a building block of UNet's decoder, registered with the backbones (UNet is covered)",
    ('mmseg', 'ResNeXt'): 'no shipped config of mmsegmentation builds it',
    ('mmseg', 'ResNetV1d'): 'no shipped config of mmsegmentation builds it',
    ('mmseg', 'STDCNet'): 'built only inside STDCContextPathNet (covered)',
    ('mmseg', 'TIMMBackbone'): 'needs the timm package, not part of the stack',
    ('mmseg', 'VPD'): 'needs Stable Diffusion packages (mmsegmentation requirements/optional.txt)',
}

SCOPES = {'mmpretrain': 'mmpretrain', 'mmaction': 'mmaction', 'mmseg': 'mmseg'}


def _registered_backbones(scope: str):
    from mmengine.registry import DefaultScope
    registry = MODELS
    with DefaultScope.overwrite_default_scope(scope):
        registry = MODELS._get_root_registry()._search_child(scope)
        registry.import_from_location()
    return {name for name, cls in registry.module_dict.items() if '.backbones.' in getattr(cls, '__module__', '')}


def _available(scope: str) -> bool:
    return scope != 'mmseg' or mmseg_available()


@pytest.mark.parametrize('scope', list(SCOPES))
def test_every_registered_backbone_is_covered_or_excluded(scope):
    if not _available(scope):
        pytest.skip('mmsegmentation needs the compiled mmcv (tools/build_mmcv.sh)')
    registered = _registered_backbones(scope)
    covered = set(CONFIGS[scope]) | {name for (s, name) in EXCLUDED if s == scope}
    assert registered == covered, (sorted(registered - covered), sorted(covered - registered))


CASES = [(scope, name) for scope in CONFIGS for name in CONFIGS[scope]]
#: the block each backbone takes: the matrix's blocks in turn
BLOCKS = {case: MATRIX_BLOCKS[i % len(MATRIX_BLOCKS)] for i, case in enumerate(CASES)}


def test_every_block_takes_a_turn():
    assert len(MATRIX_BLOCKS) <= len(CASES) and set(BLOCKS.values()) == set(MATRIX_BLOCKS)
    assert {'NLBlock', 'NSBlock', 'A2Block', 'CGNLBlock', 'CCBlock', 'SNLBlock'} <= set(MATRIX_BLOCKS)


@pytest.mark.parametrize('scope, name', CASES, ids=[f'{s}.{n}-{BLOCKS[s, n]}' for s, n in CASES])
def test_one_block_by_config(scope, name):
    if not _available(scope):
        pytest.skip('mmsegmentation needs the compiled mmcv (tools/build_mmcv.sh)')
    check_backbone(SCOPES[scope], CONFIGS[scope][name], SHRINK.get((scope, name), {}), ENTRIES.get((scope, name)),
                   block=block_config(BLOCKS[scope, name]))


@pytest.mark.parametrize('scope, name', CASES, ids=[f'{s}.{n}' for s, n in CASES])
def test_without_plugins_upstream_builds_it(scope, name):
    """A config without ``plugins`` builds through the package's registry wrapper exactly as through upstream's own
    build function: the same class, the same state dict, no hook added anywhere."""
    if not _available(scope):
        pytest.skip('mmsegmentation needs the compiled mmcv (tools/build_mmcv.sh)')
    init_default_scope(SCOPES[scope])
    overrides = {k: v for k, v in SHRINK.get((scope, name), {}).items() if k != 'probe_shape'}
    cfg = backbone_config(SCOPES[scope], CONFIGS[scope][name], overrides)
    torch.manual_seed(0)
    ours = MODELS.build(cfg)
    torch.manual_seed(0)
    theirs = MODELS.build_func.__wrapped__(cfg, registry=MODELS)
    assert type(ours) is type(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    for model in (ours, theirs):
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert set(vars(ours)) == set(vars(theirs))
