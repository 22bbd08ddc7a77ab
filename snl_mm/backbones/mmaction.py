"""mmaction2's backbones: what the insertion mechanism needs to know about them, and ``snl_mm.ResNet3d``.

* Residual blocks (I3D's, SlowOnly's, SlowFast's, R(2+1)D's, CSN's 3-D ones; the 2-D ones of TSN, TSM, TIN,
  TANet; X3D's): ``after_convK`` is the output of the ``convK`` ConvModule, ``after_block`` the block's output.
* 2-D video backbones fold time into the batch: their blocks see clips (:func:`frames_layout`).
* TimeSformer: tokens numbered ``(p t)``, the class token kept apart; its divided attention modules add their own
  input (a block replacing one replaces it whole). SlowFast: ``within='slow_path'`` / ``'fast_path'``.
* The build-time check runs a 3-D backbone on one clip of the size it is built for, a 2-D one on one clip of
  ``num_segments`` frames (8 for TSN's and C2D's).
* mmaction2 1.2.0's wheel lacks ``localizers/drn``: ``import snl_mm`` fills the gap before this module imports
  mmaction2's models (:mod:`snl_mm.patches.mmaction_drn`).

mmaction2's I3D non-local models name their blocks ``non_local_block`` inside the residual block (mmcv's
``NonLocal3d`` with ``sub_sample=True``, ``use_scale=False``, BN3d): an entry with ``name='non_local_block'`` and
``cfg=dict(type='NLBlock', sub_sample=True, use_scale=False)`` at the same places loads such a checkpoint
strictly.
"""
from typing import Dict, Optional

import torch.nn as nn
from mmaction.models.backbones import C2D, C3D, MobileNetV2TSM, MobileOneTSM, ResNetTIN, TANet
from mmaction.models.backbones import mobilenet_v2 as _mobilenet_v2
from mmaction.models.backbones import resnet as _resnet2d
from mmaction.models.backbones.resnet3d import BasicBlock3d, Bottleneck3d
from mmaction.models.backbones.resnet3d import ResNet3d as _ResNet3d
from mmaction.models.backbones.resnet3d_slowfast import ResNet3dSlowFast
from mmaction.models.backbones.resnet_tsm import NL3DWrapper, ResNetTSM, TemporalShift
from mmaction.models.backbones.timesformer import TimeSformer
from mmaction.models.backbones.uniformer import Attention as UniFormerAttention
from mmaction.models.backbones.uniformer import UniFormer
from mmaction.models.backbones.uniformerv2 import UniFormerV2
from mmaction.models.backbones.x3d import BlockX3D
from mmaction.models.common.transformer import DividedSpatialAttentionWithNorm, DividedTemporalAttentionWithNorm

from snl_mm.plugins import (Capture, FramesLayout, Site, TokensLayout, plugin_class, register_layout, register_probe,
                            register_replaceable, register_sites, register_stages)
from snl_mm.plugins.probe import input_channels
from snl_mm.registry import MODELS

ResNet3d = MODELS.register_module(module=plugin_class(
    _ResNet3d, __name__, 'mmaction2 ``ResNet3d`` (I3D) with a ``plugins=`` argument; its ``non_local`` options keep '
    'working (an ``after_block`` block runs after the residual block\'s own ``non_local_block``).'))


@register_sites(Bottleneck3d, _resnet2d.Bottleneck, BlockX3D)
def bottleneck_sites(block: nn.Module) -> Dict[str, Site]:
    """The three ConvModules of a bottleneck, and the block."""
    return {'after_conv1': Site('conv1', 'post'), 'after_conv2': Site('conv2', 'post'),
            'after_conv3': Site('conv3', 'post'), 'after_block': Site('', 'post')}


@register_sites(BasicBlock3d, _resnet2d.BasicBlock)
def basic_block_sites(block: nn.Module) -> Dict[str, Site]:
    """The two ConvModules of a basic block, and the block."""
    return {'after_conv1': Site('conv1', 'post'), 'after_conv2': Site('conv2', 'post'),
            'after_block': Site('', 'post')}


@register_sites(TemporalShift, NL3DWrapper)
def wrapped_block_sites(block: nn.Module) -> Dict[str, Site]:
    """A residual block wrapped by TSM (``shift_place='block'``, ``non_local``): after the wrapper."""
    return {'after_block': Site('', 'post')}


@register_stages(ResNetTSM)
def tsm_stages(backbone: nn.Module):
    """TSM's ``temporal_pool`` wraps ``layer2`` in a pooling module whose ``net`` is the stage."""
    stages = []
    for name in backbone.res_layers:
        stage = getattr(backbone, name)
        stages.append((f'{name}.net', stage.net) if hasattr(stage, 'net') else (name, stage))
    return stages


_SEGMENTED = (ResNetTSM, ResNetTIN, TANet, MobileNetV2TSM, MobileOneTSM)


@register_layout(_resnet2d.ResNet, _mobilenet_v2.MobileNetV2, *_SEGMENTED)
def frames_layout(backbone: nn.Module, path: str) -> FramesLayout:
    """2-D video backbones: TSM and its kin, clips of ``num_segments`` frames (halved after ``layer1`` by TSM's
    ``temporal_pool``); C2D folds its 5-D input itself, clips of its input's batch; TSN's plain ResNet and
    MobileNetV2, clips of the recogniser's input."""
    if isinstance(backbone, _SEGMENTED):
        pooled = getattr(backbone, 'temporal_pool', False) and path.startswith('layer') \
            and not path.startswith('layer1')
        return FramesLayout(backbone.num_segments // 2 if pooled else backbone.num_segments)
    return FramesLayout(clips=Capture('' if isinstance(backbone, C2D) else None, 'batch'))


@register_probe(_resnet2d.ResNet, _mobilenet_v2.MobileNetV2, *_SEGMENTED)
def frames_probe(backbone: nn.Module):
    """One clip: of ``num_segments`` frames (TSM and its kin), of 8 frames (C2D's 5-D one, TSN's)."""
    if isinstance(backbone, C2D):
        return _clip(backbone)
    return (getattr(backbone, 'num_segments', 8), input_channels(backbone), 64, 64)


def _clip(backbone: nn.Module, frames: int = 8, size: int = 64):
    return (1, input_channels(backbone), frames, size, size)


# the clips 3-D networks are built for: C3D's fully connected layers take 16 x 112 x 112; SlowFast's slow pathway
# samples every resample_rate-th frame (4 of them); TimeSformer and UniFormerV2 their own frame count and size
register_probe(C3D)(lambda backbone: _clip(backbone, frames=16, size=112))
register_probe(ResNet3dSlowFast)(lambda backbone: _clip(backbone, frames=4 * backbone.resample_rate))
register_probe(TimeSformer)(lambda backbone: (1, 3, backbone.num_frames, *backbone.patch_embed.img_size))
register_probe(UniFormerV2)(lambda backbone: (1, 3, backbone.transformer.T, *(backbone.input_resolution, ) * 2))


@register_layout(TimeSformer)
def timesformer_layout(backbone: nn.Module, path: str) -> Optional[TokensLayout]:
    """Tokens of the transformer layers: a class token, then patches numbered ``(p t)``."""
    if not path.startswith('transformer_layers') or backbone.attention_type == 'space_only':
        return None
    size, patch = backbone.patch_embed.img_size, backbone.patch_embed.patch_size
    grid = (backbone.num_frames, size[0] // patch[0], size[1] // patch[1])
    return TokensLayout(grid, extra_tokens=1, order='space_time')


@register_layout(UniFormer)
def uniformer_layout(backbone: nn.Module, path: str) -> Optional[TokensLayout]:
    """The attention of UniFormer's self-attention blocks sees tokens of the block's ``(T, H, W)`` grid."""
    parts = path.split('.')
    if len(parts) == 3 and parts[2] == 'attn':
        return TokensLayout(Capture(f'{parts[0]}.{parts[1]}.pos_embed', 'grid'))
    return None


register_replaceable(DividedSpatialAttentionWithNorm, DividedTemporalAttentionWithNorm, residual=True)
register_replaceable(UniFormerAttention, residual=False)

__all__ = ['ResNet3d']
