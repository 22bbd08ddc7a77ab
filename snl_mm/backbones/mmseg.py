"""mmsegmentation's backbones: what the insertion mechanism needs to know about them beyond their ResNets
(:mod:`.mmdet`).

* SegFormer's MixVisionTransformer: its encoder blocks (``layers.i.1.j``) take ``(tokens, hw_shape)``; a block after
  one sees the token grid ``hw_shape``.
* UNet has a ``plugins`` argument it does not implement (it asserts ``None``): a config's ``plugins`` there is the
  package's.
"""
from typing import Optional

import torch.nn as nn
from mmseg.models.backbones.mit import MixVisionTransformer
from mmseg.models.backbones.unet import UNet

from snl_mm.plugins import TokensLayout, register_layout, register_native


@register_layout(MixVisionTransformer)
def mit_layout(backbone: nn.Module, path: str) -> Optional[TokensLayout]:
    """Tokens of an encoder block (``layers.i.1.j``), on the grid its stage's patch embedding gave."""
    parts = path.split('.')
    if len(parts) == 4 and parts[0] == 'layers' and parts[2] == '1':
        return TokensLayout(('input', 1))
    return None


register_native(UNet, positions=())
