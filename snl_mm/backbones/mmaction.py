"""mmaction2's backbones: what the insertion mechanism needs to know about them, and ``snl_mm.ResNet3d``.

* Residual blocks (``Bottleneck3d``, ``BasicBlock3d`` of I3D, SlowOnly, SlowFast, R(2+1)D, CSN; the 2-D
  ``Bottleneck``/``BasicBlock`` of TSN, TSM, TIN, TANet; X3D's ``BlockX3D``): ``after_convK`` is the output of the
  ``convK`` ConvModule (conv, norm and, but for the last, activation), ``after_block`` the block's output.
* 2-D video backbones fold time into the batch (``(N * T, C, H, W)``): their blocks see the clip
  ``(N, C, T, H, W)``, ``T`` being the backbone's ``num_segments`` (TSM, TIN, TANet, MobileNetV2-TSM, MobileOne-TSM;
  halved after ``layer1`` with TSM's ``temporal_pool``) or, for the plain 2-D ResNet and MobileNetV2 of TSN, the
  segments of the recogniser's input.
* TimeSformer: tokens ``(B, 1 + P T, C)`` numbered ``(p t)``, the class token kept apart; its divided attention
  modules add their own input (a block replacing one replaces it whole).
* SlowFast: both pathways are addressed with ``within='slow_path'`` / ``within='fast_path'``.
* The build-time check runs 3-D backbones on a ``(1, 3, 8, 64, 64)`` clip (SlowFast: 32 frames, TimeSformer and
  UniFormerV2: their own frame count and image size) and 2-D video backbones on one clip of ``num_segments``
  frames (8 for TSN's). C2D folds its clips into the batch itself: its blocks see the clips of its input.

mmaction2's I3D non-local models name their blocks ``non_local_block`` inside the residual block (mmcv's
``NonLocal3d`` with ``sub_sample=True``, ``use_scale=False``, BN3d): an entry with ``name='non_local_block'`` and
``cfg=dict(type='NLBlock', sub_sample=True, use_scale=False)`` at the same places loads such a checkpoint
strictly.
"""
from typing import Dict, Optional

import torch.nn as nn

from snl_mm.plugins import (Capture, FramesLayout, Site, TokensLayout, register_layout, register_probe,
                            register_replaceable, register_sites, register_stages)
from snl_mm.plugins.mixin import plugin_class
from snl_mm.plugins.probe import input_channels
from snl_mm.registry import MODELS
from .mmaction_drn import apply as _fill_drn_gap

_fill_drn_gap()  # mmaction2 1.2.0's wheel lacks localizers/drn: without this, mmaction.models does not import

from mmaction.models.backbones import C2D, C3D, MobileNetV2TSM, MobileOneTSM, ResNetTIN, TANet  # noqa: E402
from mmaction.models.backbones import mobilenet_v2 as _mobilenet_v2  # noqa: E402
from mmaction.models.backbones import resnet as _resnet2d  # noqa: E402
from mmaction.models.backbones.resnet3d import BasicBlock3d, Bottleneck3d  # noqa: E402
from mmaction.models.backbones.resnet3d import ResNet3d as _ResNet3d  # noqa: E402
from mmaction.models.backbones.resnet3d_slowfast import ResNet3dSlowFast  # noqa: E402
from mmaction.models.backbones.resnet_tsm import NL3DWrapper, ResNetTSM, TemporalShift  # noqa: E402
from mmaction.models.backbones.timesformer import TimeSformer  # noqa: E402
from mmaction.models.backbones.uniformer import Attention as UniFormerAttention  # noqa: E402
from mmaction.models.backbones.uniformer import UniFormer  # noqa: E402
from mmaction.models.backbones.uniformerv2 import UniFormerV2  # noqa: E402
from mmaction.models.backbones.x3d import X3D, BlockX3D  # noqa: E402
from mmaction.models.common.transformer import (DividedSpatialAttentionWithNorm,  # noqa: E402
                                                DividedTemporalAttentionWithNorm)

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


class _BackboneSegments:
    """``T`` of a TSM-style backbone at a stage: its ``num_segments``, halved after ``layer1`` by
    ``temporal_pool``. A callable object (deep-copied with the model)."""

    def __init__(self, backbone: nn.Module, pooled: bool) -> None:
        self.backbone = backbone
        self.pooled = pooled

    def __call__(self) -> int:
        t = self.backbone.num_segments
        return t // 2 if self.pooled and getattr(self.backbone, 'temporal_pool', False) else t


_SEGMENTED = (ResNetTSM, ResNetTIN, TANet, MobileNetV2TSM, MobileOneTSM)


@register_layout(*_SEGMENTED)
def segmented_layout(backbone: nn.Module, path: str) -> Optional[FramesLayout]:
    """TSM and its kin: clips of ``num_segments`` frames."""
    if path.startswith('conv1') or path.startswith('maxpool') or not path:
        return FramesLayout(_BackboneSegments(backbone, False))
    return FramesLayout(_BackboneSegments(backbone, not path.startswith('layer1')))


@register_layout(_resnet2d.ResNet, _mobilenet_v2.MobileNetV2)
def tsn_layout(backbone: nn.Module, path: str) -> Optional[FramesLayout]:
    """The 2-D backbones of TSN: clips of the recogniser's segments; C2D folds its 5-D input itself: clips of the
    input's batch."""
    if isinstance(backbone, _SEGMENTED):
        return segmented_layout(backbone, path)
    if isinstance(backbone, C2D):
        return FramesLayout(backbone.__dict__.setdefault('_snl_mm_clips', Capture('', 'batch')))
    return FramesLayout('recognizer')


@register_probe(*_SEGMENTED)
def segmented_probe(backbone: nn.Module):
    return (backbone.num_segments, 3, 64, 64)


@register_probe(_resnet2d.ResNet, _mobilenet_v2.MobileNetV2)
def tsn_probe(backbone: nn.Module):
    if isinstance(backbone, _SEGMENTED):
        return segmented_probe(backbone)
    if isinstance(backbone, C2D):
        return _clip(backbone)
    return (8, input_channels(backbone), 64, 64)


def _clip(backbone: nn.Module, frames: int = 8, size: int = 64):
    return (1, input_channels(backbone), frames, size, size)


@register_probe(C3D)
def c3d_probe(backbone: nn.Module):
    """C3D's fully connected layers take the 16 x 112 x 112 clips it was designed for."""
    return _clip(backbone, frames=16, size=112)


@register_probe(ResNet3dSlowFast)
def slowfast_probe(backbone: nn.Module):
    """The slow pathway samples every ``resample_rate``-th frame: 4 of them."""
    return _clip(backbone, frames=4 * backbone.resample_rate)


@register_probe(TimeSformer)
def timesformer_probe(backbone: nn.Module):
    return (1, 3, backbone.num_frames, *backbone.patch_embed.img_size)


@register_probe(UniFormerV2)
def uniformerv2_probe(backbone: nn.Module):
    return (1, 3, backbone.transformer.T, backbone.input_resolution, backbone.input_resolution)


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
