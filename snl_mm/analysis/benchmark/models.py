"""Whole models of the package's configs, built from torch, mmengine, mmcv and mmpretrain / mmaction2 alone.

mmsegmentation's models import its compiled ``mmcv.ops`` at import time; a machine with mmcv-lite (a GPU
machine with a torch of its own, say) cannot build them. The Cityscapes configs are therefore built here from
their own fields with pieces that need no compiled op:

* backbone: mmpretrain's ``ResNetV1c`` with the config's arguments (depth, strides, dilations, norm...).
  mmsegmentation's ``contract_dilation=True`` (the first block of a dilated stage uses half the dilation) has
  no counterpart there: the same convolutions with another dilation, so the same parameters, FLOPs and
  activation sizes. Its deep stem's three convolutions are ConvModules (``stem.0.conv``, ``stem.0.bn``) where
  mmsegmentation's are a plain sequence (``stem.0``, ``stem.1``): other names, the same layers;
* heads: :class:`ConvDecodeHead`, mmsegmentation's ``FCNHead`` (and, with a block, ``snl_mm.NonlocalHead``:
  ``convs[0] -> block -> convs[1] -> concat -> conv_cat``) from mmcv ``ConvModule``; parameter names as
  upstream, so that a state dict of the mmsegmentation model has the same keys and shapes (tested where
  mmsegmentation can be built);
* loss: cross-entropy of each head's logits resized to the label (``ignore_index=255``), the auxiliary head
  weighted by its ``loss_weight``; no data preprocessor (inputs are normalised already).

The I3D configs (mmaction2, no compiled op needed) are built with mmaction2's registry: the config's backbone
(``snl_mm.ResNet3d`` with its plugin entries, or mmaction2's ``ResNet3d``) and ``I3DHead``, and a
cross-entropy loss. SyncBN becomes BN, as mmengine does on one device.
"""
import logging
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule, revert_sync_batchnorm
from torch import Tensor

#: the families of models: where their configs live, the config name of the baseline and of a block's variant
FAMILIES = {
    'seg': dict(folder='cityscapes', baseline='fcn', template='{}_r50-d8_4xb2-40k_cityscapes-512x1024.py',
                baseline_token='fcn', block_token='{}'),
    'i3d': dict(folder='ucf101', baseline='i3d',
                template='i3d_r50{}_k400-pretrained_8xb8-32x2x1-100e_ucf101-split1-rgb.py', baseline_token='',
                block_token='-{}'),
}
#: mmsegmentation ResNetV1c arguments that mmpretrain's has not, and why leaving them out changes no figure
_DROPPED_BACKBONE_ARGS = {'contract_dilation': 'same convolutions, other dilation', 'pretrained': 'no weights'}
_BATCH_NORMS = ('BN', 'BN2d', 'SyncBN', 'MMSyncBN', 'NaiveSyncBN')
#: decode head fields :func:`build_head` builds (the rest of mmsegmentation's would change the model)
_HEAD_FIELDS = ('type', 'in_channels', 'in_index', 'channels', 'num_convs', 'concat_input', 'dropout_ratio',
                'num_classes', 'norm_cfg', 'align_corners', 'loss_decode', 'block', 'kernel_size', 'dilation')


def config_dir() -> Path:
    """The checkout's ``configs`` folder."""
    return Path(__file__).resolve().parents[3] / 'configs'


def model_variants(family: str, configs: Optional[Path] = None) -> Dict[str, Path]:
    """``{variant: config path}`` of a family: the baseline and one per block of the catalogue with a config.

    Args:
        family (str): ``'seg'`` (Cityscapes FCN, 512x1024) or ``'i3d'`` (UCF-101 I3D R-50, 32x224x224).
        configs (Path, optional): the ``configs`` folder (default: the checkout's).
    """
    from snl_mm.blocks import BLOCK_NAMES
    if family not in FAMILIES:
        raise ValueError(f'model family must be one of {tuple(FAMILIES)}, got {family!r}')
    spec = FAMILIES[family]
    folder = (configs or config_dir()) / spec['folder']
    variants = {spec['baseline']: folder / spec['template'].format(spec['baseline_token'])}
    for name in BLOCK_NAMES:
        short = name[:-len('Block')].lower()
        path = folder / spec['template'].format(spec['block_token'].format(short))
        if path.exists():
            variants[short] = path
    missing = [str(p) for p in variants.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f'configs of the {family} family not found: {missing}')
    return variants


class ConvDecodeHead(BaseModule):
    """mmsegmentation's ``FCNHead``, or with ``block`` its ``NLHead`` structure (``snl_mm.NonlocalHead``).

    Args:
        in_channels (int): channels of the selected backbone level.
        channels (int): the head's width.
        num_classes (int): classes of the logits.
        in_index (int): the backbone level it reads.
        num_convs (int): 3x3 ConvModules (the block follows the first).
        concat_input (bool): concatenate the input before ``conv_cat``.
        dropout_ratio (float): ``Dropout2d`` before the classifier.
        norm_cfg (dict, optional): norm of the ConvModules.
        block (dict, optional): config of a nonlocal block (``dict(type='SNLBlock', ...)``).
        kernel_size (int): kernel of the convolutions.
        dilation (int): dilation of the ``convs``.

    Shapes:
        input: the backbone's levels; the selected one ``(B, in_channels, H, W)``; output ``(B, num_classes,
        H, W)``.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, in_index: int = -1,
                 num_convs: int = 2, concat_input: bool = True, dropout_ratio: float = 0.1,
                 norm_cfg: Optional[Dict] = None, block: Optional[Dict] = None, kernel_size: int = 3,
                 dilation: int = 1):
        super().__init__()
        if num_convs < (1 if block else 0):
            raise ValueError(f'a head with a block needs num_convs >= 1, got {num_convs}')
        self.in_index = in_index
        self.concat_input = concat_input
        pad = kernel_size // 2 * dilation
        self.convs = nn.Sequential(*[
            ConvModule(in_channels if i == 0 else channels, channels, kernel_size, padding=pad, dilation=dilation,
                       norm_cfg=norm_cfg) for i in range(num_convs)])
        if concat_input:
            self.conv_cat = ConvModule(in_channels + channels, channels, kernel_size, padding=kernel_size // 2,
                                       norm_cfg=norm_cfg)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.nl_block = _head_block(block, channels, norm_cfg) if block is not None else None

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        x = inputs[self.in_index]
        feats = x
        for i, conv in enumerate(self.convs):
            feats = conv(feats)
            if i == 0 and self.nl_block is not None:
                feats = self.nl_block(feats)
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return self.conv_seg(self.dropout(feats))


def _head_block(block: Dict, channels: int, norm_cfg: Optional[Dict]) -> nn.Module:
    """The head's block, as ``snl_mm.NonlocalHead`` builds it: ``in_channels = channels``, and the head's norm
    where the block's own default is a batch norm."""
    from snl_mm.registry import ROOT_MODELS
    from snl_mm.utils import argument_default
    cfg = dict(block, in_channels=channels)
    default = argument_default(ROOT_MODELS.get(cfg['type']), 'norm_cfg')
    if norm_cfg is not None and 'norm_cfg' not in cfg and isinstance(default, dict) \
            and default.get('type') in _BATCH_NORMS:
        cfg['norm_cfg'] = dict(norm_cfg)
    return ROOT_MODELS.build(cfg)


class Segmenter(BaseModule):
    """A backbone, a decode head and optional auxiliary heads (mmsegmentation's ``EncoderDecoder``)."""

    def __init__(self, backbone: nn.Module, heads: Sequence[Tuple[ConvDecodeHead, float]],
                 align_corners: bool = False):
        super().__init__()
        self.backbone = backbone
        self.decode_head = heads[0][0]
        self.auxiliary_head = heads[1][0] if len(heads) > 1 else None
        self.loss_weights = [w for _, w in heads]
        self.align_corners = align_corners

    def _logits(self, head: nn.Module, feats, size) -> Tensor:
        return F.interpolate(head(feats), size=size, mode='bilinear', align_corners=self.align_corners)

    def forward(self, images: Tensor) -> Tensor:
        """Per-pixel classes ``(B, H, W)`` of ``(B, 3, H, W)`` images (inference)."""
        return self._logits(self.decode_head, self.backbone(images), images.shape[-2:]).argmax(dim=1)

    def loss(self, images: Tensor, labels: Tensor) -> Tensor:
        """Weighted cross-entropy of every head, ``labels`` ``(B, H, W)`` (255 ignored)."""
        feats = self.backbone(images)
        heads = [self.decode_head] + ([self.auxiliary_head] if self.auxiliary_head is not None else [])
        return sum(w * F.cross_entropy(self._logits(h, feats, labels.shape[-2:]), labels, ignore_index=255)
                   for h, w in zip(heads, self.loss_weights))


class ClipClassifier(BaseModule):
    """A video backbone and its classification head (mmaction2's ``Recognizer3D`` without preprocessing)."""

    def __init__(self, backbone: nn.Module, cls_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head

    def forward(self, clips: Tensor) -> Tensor:
        """Class probabilities ``(B, K)`` of ``(B, 3, T, H, W)`` clips (inference)."""
        return self.cls_head(self.backbone(clips)).softmax(dim=1)

    def loss(self, clips: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.cls_head(self.backbone(clips)), labels)


def build_head(cfg: Dict, field: str) -> Tuple[ConvDecodeHead, float]:
    """A decode head config (``FCNHead`` or ``snl_mm.NonlocalHead``) as a :class:`ConvDecodeHead` and its loss
    weight; ``field`` names it in errors (``'decode_head'``)."""
    loss = cfg.get('loss_decode', dict(type='CrossEntropyLoss'))
    if not isinstance(loss, dict) or loss.get('type') != 'CrossEntropyLoss' or loss.get('use_sigmoid'):
        raise ValueError(f'model.{field}.loss_decode: only a softmax CrossEntropyLoss can be built here, got '
                         f'{loss!r}')
    kinds = {'FCNHead': False, 'snl_mm.NonlocalHead': True, 'NonlocalHead': True}
    if cfg['type'] not in kinds:
        raise ValueError(f'model.{field}.type: one of {tuple(kinds)} can be built here, got {cfg["type"]!r}')
    extra = sorted(set(cfg) - set(_HEAD_FIELDS))
    if extra or not isinstance(cfg.get('in_index', -1), int):
        raise ValueError(f'model.{field}: {extra or ["in_index (a list)"]} cannot be built here; the fields '
                         f'built are {_HEAD_FIELDS}')
    head = ConvDecodeHead(cfg['in_channels'], cfg['channels'], cfg['num_classes'], cfg.get('in_index', -1),
                          cfg.get('num_convs', 2), cfg.get('concat_input', True), cfg.get('dropout_ratio', 0.1),
                          cfg.get('norm_cfg'), cfg.get('block') if kinds[cfg['type']] else None,
                          cfg.get('kernel_size', 3), cfg.get('dilation', 1))
    return head, loss.get('loss_weight', 1.0)


def build_seg_model(model_cfg: Dict) -> Segmenter:
    """A Cityscapes ``EncoderDecoder`` config's model, from mmpretrain's ``ResNetV1c`` and :class:`ConvDecodeHead`."""
    from snl_mm.utils import require
    require('mmpretrain', 'the segmentation models of the benchmark')
    from mmpretrain.models.backbones import ResNetV1c
    backbone = dict(model_cfg['backbone'])
    if backbone.get('type') not in ('ResNetV1c', 'mmseg.ResNetV1c'):
        raise ValueError(f'model.backbone.type: ResNetV1c can be built here, got {backbone.get("type")!r}')
    extra = set(backbone) - {'type', 'depth', 'num_stages', 'out_indices', 'dilations', 'strides', 'norm_cfg',
                             'norm_eval', 'style', 'init_cfg'} - set(_DROPPED_BACKBONE_ARGS)
    if extra:
        raise ValueError(f'model.backbone: {sorted(extra)} need mmsegmentation\'s own ResNetV1c; here only '
                         f'mmpretrain\'s arguments and {sorted(_DROPPED_BACKBONE_ARGS)}')
    backbone = {k: v for k, v in backbone.items() if k not in _DROPPED_BACKBONE_ARGS and k != 'type'}
    heads = [build_head(model_cfg['decode_head'], 'decode_head')]
    aux = model_cfg.get('auxiliary_head')
    for i, cfg in enumerate(aux if isinstance(aux, (list, tuple)) else [aux] if aux else []):
        heads.append(build_head(cfg, f'auxiliary_head[{i}]' if isinstance(aux, (list, tuple)) else 'auxiliary_head'))
    if len(heads) > 2:
        raise ValueError('model.auxiliary_head: at most one auxiliary head can be built here')
    model = Segmenter(ResNetV1c(**backbone), heads, model_cfg['decode_head'].get('align_corners', False))
    return revert_sync_batchnorm(model)


def build_clip_model(model_cfg: Dict) -> ClipClassifier:
    """An I3D ``Recognizer3D`` config's backbone and head (mmaction2's registry)."""
    from snl_mm.utils import require
    require('mmaction', 'the I3D models of the benchmark')
    from mmaction.registry import MODELS as VIDEO_MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmaction')
    model = ClipClassifier(VIDEO_MODELS.build(model_cfg['backbone']), VIDEO_MODELS.build(model_cfg['cls_head']))
    return revert_sync_batchnorm(model)


def input_size(family: str, cfg) -> Tuple[int, Tuple[int, ...]]:
    """``(batch per device, input shape without batch)`` of a config's training: seg ``(3, H, W)`` of its
    ``crop_size``; i3d ``(3, T, H, W)`` of ``SampleFrames.clip_len`` and its last square ``Resize``."""
    batch = cfg.train_dataloader.batch_size
    if family == 'seg':
        return batch, (3, *cfg.crop_size)
    steps = {t['type'].split('.')[-1]: t for t in cfg.train_pipeline}
    resize = [t for t in cfg.train_pipeline if t['type'].endswith('Resize') and t.get('keep_ratio') is False]
    if 'SampleFrames' not in steps or not resize:
        raise ValueError('train_pipeline: the clip size needs a SampleFrames and a Resize with keep_ratio=False')
    return batch, (3, steps['SampleFrames']['clip_len'], *resize[-1]['scale'][::-1])


def build_model(family: str, cfg) -> nn.Module:
    """The model of a loaded config (``mmengine.Config``) of ``family``, initialised, in train mode."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter
    try:
        model = build_seg_model(cfg.model) if family == 'seg' else build_clip_model(cfg.model)
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.train()


def make_inputs(family: str, cfg, batch: int, shape: Sequence[int], seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Random normalised inputs ``(batch, *shape)`` and labels (seg: per pixel; i3d: per clip)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *shape), generator=gen)
    if family == 'seg':
        return x, torch.randint(0, cfg.model.decode_head.num_classes, (batch, *shape[1:]), generator=gen)
    return x, torch.randint(0, cfg.model.cls_head.num_classes, (batch, ), generator=gen)


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``."""
    return sum(math.prod(p.shape) for p in model.parameters())
