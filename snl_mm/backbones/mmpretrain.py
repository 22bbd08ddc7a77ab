"""mmpretrain's backbones: what the insertion mechanism needs to know about them, and the ResNet family with a
``plugins=`` argument of its own (``snl_mm.ResNet``, ``ResNetV1c``, ``ResNetV1d``, ``ResNeXt``, ``ResNet_CIFAR``:
thin aliases of mmpretrain's classes, the same as those classes with ``plugins`` in a config; every checkpoint of
the plain backbone loads with only the blocks' keys missing).

Positions of mmpretrain's residual blocks: ``after_convK`` is after conv K and the norm/activation that follow it,
as mmdetection's ``ResNet(plugins=...)`` (``docs/plugins.md`` tabulates them); ``after_block`` the block's output.

Transformers: a ViT's layers (``layers.i``) and their attention (``layers.i.attn``, whose caller adds its input)
see tokens ``(B, L, C)`` with ``num_extra_tokens`` leading tokens and the patch grid of ``patch_embed``; a Swin's
stages (``stages.i``: ``(tokens, hw_shape)``), blocks (``stages.i.blocks.j``) and window attention
(``stages.i.blocks.j.attn``) see tokens on the grid ``hw_shape``.
"""
from typing import Dict, Optional

import torch.nn as nn
from mmpretrain.models.backbones.resnet import BasicBlock, Bottleneck
from mmpretrain.models.backbones.resnet import ResNet as _ResNet
from mmpretrain.models.backbones.resnet import ResNetV1c as _ResNetV1c
from mmpretrain.models.backbones.resnet import ResNetV1d as _ResNetV1d
from mmpretrain.models.backbones.resnet_cifar import ResNet_CIFAR as _ResNet_CIFAR
from mmpretrain.models.backbones.resnext import ResNeXt as _ResNeXt
from mmpretrain.models.backbones.swin_transformer import SwinTransformer
from mmpretrain.models.backbones.swin_transformer_v2 import SwinTransformerV2
from mmpretrain.models.backbones.beit import BEiTViT
from mmpretrain.models.backbones.mlp_mixer import MlpMixer
from mmpretrain.models.backbones.t2t_vit import T2T_ViT
from mmpretrain.models.backbones.vgg import VGG
from mmpretrain.models.backbones.vision_transformer import VisionTransformer
from mmpretrain.models.utils import MultiheadAttention, ShiftWindowMSA

from snl_mm.plugins import (Capture, Site, TokensLayout, plugin_class, register_layout, register_probe,
                            register_replaceable, register_sites)
from snl_mm.plugins.probe import input_channels
from snl_mm.plugins.sites import lookup
from snl_mm.registry import MODELS


@register_sites(BasicBlock)
def basic_block_sites(block: nn.Module) -> Dict[str, Site]:
    """Positions of mmpretrain's ``BasicBlock`` (its ReLU module is shared, so hooks sit on conv2 and
    drop_path, whose inputs are the branch after ``relu(norm1(conv1))`` and after ``norm2(conv2)``)."""
    return {'after_conv1': Site('conv2', 'pre'), 'after_conv2': Site('drop_path', 'pre'),
            'after_block': Site('', 'post')}


@register_sites(Bottleneck)
def bottleneck_sites(block: nn.Module) -> Dict[str, Site]:
    """Positions of mmpretrain's ``Bottleneck`` (also ResNeXt's, a subclass)."""
    return {'after_conv1': Site('conv2', 'pre'), 'after_conv2': Site('conv3', 'pre'),
            'after_conv3': Site('drop_path', 'pre'), 'after_block': Site('', 'post')}


#: transformers whose layers see tokens: (path prefix of the layers, the module returning the patch grid second)
_TOKEN_LAYERS = {VisionTransformer: ('layers.', 'patch_embed'), BEiTViT: ('layers.', 'patch_embed'),
                 T2T_ViT: ('encoder.', 'tokens_to_token'), MlpMixer: ('layers.', 'patch_embed')}


@register_layout(*_TOKEN_LAYERS)
def tokens_layout(backbone: nn.Module, path: str) -> Optional[TokensLayout]:
    """Tokens of the encoder layers: ``num_extra_tokens`` (class, distillation; none in MLP-Mixer), then the patch
    grid the patch embedding returns."""
    prefix, grid = lookup(_TOKEN_LAYERS, type(backbone))
    if not path.startswith(prefix):
        return None
    return TokensLayout(Capture(grid, 1), extra_tokens=getattr(backbone, 'num_extra_tokens', 0))


@register_layout(SwinTransformer, SwinTransformerV2)
def swin_layout(backbone: nn.Module, path: str) -> Optional[TokensLayout]:
    """A stage returns ``(tokens, hw_shape)``; its blocks and their attention take ``(tokens, hw_shape)``."""
    parts = path.split('.')
    if parts[0] != 'stages' or len(parts) < 2:
        return None
    if len(parts) == 2:
        return TokensLayout(('output', 1), index=0)
    return TokensLayout(('input', 1))


register_replaceable(MultiheadAttention, ShiftWindowMSA, residual=False)


@register_probe(VGG)
def vgg_probe(backbone: nn.Module):
    """VGG's classifier takes the 7 x 7 map of a 224 x 224 image."""
    return (1, input_channels(backbone), 224, 224)


def _plugin_resnet(upstream: type, summary: str) -> type:
    return MODELS.register_module(module=plugin_class(upstream, __name__, summary))


ResNet = _plugin_resnet(_ResNet, 'mmpretrain ``ResNet`` with a ``plugins=`` argument.')
ResNetV1c = _plugin_resnet(_ResNetV1c, 'mmpretrain ``ResNetV1c`` (deep stem) with a ``plugins=`` argument.')
ResNetV1d = _plugin_resnet(_ResNetV1d, 'mmpretrain ``ResNetV1d`` (deep stem, average-pool downsampling) with a '
                           '``plugins=`` argument.')
ResNeXt = _plugin_resnet(_ResNeXt, 'mmpretrain ``ResNeXt`` with a ``plugins=`` argument.')
ResNet_CIFAR = _plugin_resnet(_ResNet_CIFAR, 'mmpretrain ``ResNet_CIFAR`` (3x3 stem, no max-pool) with a '
                              '``plugins=`` argument.')

__all__ = ['ResNet', 'ResNetV1c', 'ResNetV1d', 'ResNeXt', 'ResNet_CIFAR']
