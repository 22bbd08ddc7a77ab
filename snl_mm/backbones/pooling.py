"""The end of the classification networks of the paper's reference code: average, then drop, then classify.

The spectral paper's ResNet-50 and PreResNet (``SNL-Classification/model/{resnet,preresnet}_snl.py``), and the
CGNL code they derive from, average the last feature map, apply ``nn.Dropout(0.5)`` and end with one linear
layer. In mmpretrain's ``ImageClassifier`` the first two are this neck, the linear layer a ``LinearClsHead``.
"""
from typing import Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from snl_mm.registry import MODELS


@MODELS.register_module()
class GlobalAveragePoolingDropout(BaseModule):
    """Global average pooling of each feature map, then dropout: ``dropout(mean_{positions}(x))``.

    The same as mmpretrain's ``GlobalAveragePooling`` followed by ``nn.Dropout(dropout)`` on the pooled
    vectors (at evaluation, exactly ``GlobalAveragePooling``).

    Args:
        dropout (float): probability of zeroing a pooled feature while training, in ``[0, 1)``. Default: 0.5.
        init_cfg (dict, optional): mmengine init config (the neck has no parameters).

    Shapes: each input ``(B, C, *S)`` (a tensor or a tuple of them, as backbones return) -> ``(B, C)``.
    """

    def __init__(self, dropout: float = 0.5, init_cfg=None) -> None:
        super().__init__(init_cfg)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f'GlobalAveragePoolingDropout: dropout must be a probability in [0, 1), '
                             f'got {dropout!r}')
        self.dropout = nn.Dropout(float(dropout))

    def _pool(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 3:
            raise TypeError('GlobalAveragePoolingDropout: expected feature maps (B, C, *S), got '
                            f'{getattr(x, "shape", type(x).__name__)}')
        return self.dropout(torch.flatten(x, 2).mean(dim=2))

    def forward(self, inputs: Union[Tensor, Tuple[Tensor, ...]]) -> Union[Tensor, Tuple[Tensor, ...]]:
        if isinstance(inputs, tuple):
            return tuple(self._pool(x) for x in inputs)
        return self._pool(inputs)

    def extra_repr(self) -> str:
        return f'dropout={self.dropout.p}'
