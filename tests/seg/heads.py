"""The upstream decode head and the package's equivalent loaded from its checkpoint file."""
from typing import Any, Dict, Tuple

import torch
from torch import nn

from tests.helpers import randomise_


def upstream_and_loaded(name: str, cfg: Dict[str, Any], tmp_path) -> Tuple[nn.Module, nn.Module]:
    """mmsegmentation's head ``name`` built from ``cfg`` with random weights, norms and buffers, saved as a
    checkpoint file, and ``snl_mm.{name}`` built from the same ``cfg`` and loaded from that file (mmengine's
    ``load_checkpoint``, strict)."""
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS as MMSEG_MODELS

    from snl_mm.registry import MODELS
    torch.manual_seed(0)
    upstream = randomise_(MMSEG_MODELS.build(dict(type=name, **cfg)), std=0.2, seed=3)
    path = tmp_path / f'{name}.pth'
    torch.save(dict(state_dict=upstream.state_dict()), path)
    ours = MODELS.build(dict(type=f'snl_mm.{name}', **cfg))
    load_checkpoint(ours, str(path), map_location='cpu', strict=True)
    return upstream, ours
