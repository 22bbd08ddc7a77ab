"""The catalogue of the package's blocks: one answer to "which modules are our nonlocal blocks".

Every place that needs it (the segmentation head, the insertion mechanism's messages, the FLOP counter, the
attention-map and spectrum tools, the tests) asks here:

* :data:`BLOCK_NAMES`: the six blocks of the paper, by registered name;
* :data:`FAMILY_NAMES`: the rest of the nonlocal family that OpenMMLab users pick next to them (GC, DNL, ANN's
  APNB and AFNB, DANet's PAM and CAM, EMA, ISA, linear attention), each a point of the same space;
* :data:`ALL_BLOCK_NAMES`: both, in that order;
* :func:`registered_blocks`: every block class registered in mmengine's root ``MODELS`` (the six and
  :class:`~snl_mm.blocks.GraphNonlocalBlock`, and any user subclass of :class:`~snl_mm.blocks.NonlocalBase`);
* :func:`is_nonlocal_block`: whether a module is one of them;
* :func:`spectral_table`: the paper's Table 1, read off the blocks' declarations.
"""
from typing import Dict, List, Sequence, Tuple

import torch.nn as nn

from snl_mm.registry import ROOT_MODELS
from .base import NonlocalBase

#: the six blocks of the paper, in the order of its tables.
BLOCK_NAMES: Tuple[str, ...] = ('NLBlock', 'NSBlock', 'A2Block', 'CGNLBlock', 'CCBlock', 'SNLBlock')

#: the rest of the family, in the order of mmsegmentation's Cityscapes table, then linear attention.
FAMILY_NAMES: Tuple[str, ...] = ('DNLBlock', 'PAMBlock', 'CAMBlock', 'GCBlock', 'APNBBlock', 'AFNBBlock',
                                 'ISABlock', 'EMABlock', 'LinearAttentionBlock')

#: every named block of the package: the paper's six, then the family.
ALL_BLOCK_NAMES: Tuple[str, ...] = BLOCK_NAMES + FAMILY_NAMES


def registered_blocks() -> Dict[str, type]:
    """``{name: class}`` of every nonlocal block class registered in mmengine's root ``MODELS``, sorted."""
    return {name: cls for name, cls in sorted(ROOT_MODELS.module_dict.items())
            if isinstance(cls, type) and issubclass(cls, NonlocalBase)}


def is_nonlocal_block(module: nn.Module) -> bool:
    """Whether ``module`` is a nonlocal block of this package (an instance of a :class:`NonlocalBase`)."""
    return isinstance(module, NonlocalBase)


def find_blocks(model: nn.Module) -> Dict[str, NonlocalBase]:
    """``{path: block}`` of the outermost nonlocal blocks in ``model``, in registration order."""
    found: Dict[str, NonlocalBase] = {}
    for name, module in model.named_modules():
        if is_nonlocal_block(module) and not any(name.startswith(f'{outer}.') for outer in found):
            found[name] = module
    return found


#: the columns of Table 1
TABLE1_COLUMNS: Tuple[str, ...] = ('vertices', 'edges', 'affinity', 'node_feature', 'filter')


def spectral_table(in_channels: int = 8, names: Sequence[str] = BLOCK_NAMES) -> List[Dict[str, str]]:
    """The paper's Table 1 as the code declares it: one row per block of ``names`` (the paper's six by default,
    :data:`ALL_BLOCK_NAMES` for the family too), each built with its defaults at ``in_channels`` and asked for
    :meth:`~NonlocalBase.spectral_form`."""
    rows = []
    for name in names:
        block = ROOT_MODELS.build(dict(type=name, in_channels=in_channels))
        rows.append(dict(block=name, **block.spectral_form()))
    return rows


def format_spectral_table(rows: List[Dict[str, str]]) -> str:
    """Table 1 as a Markdown table."""
    header = ('block', ) + TABLE1_COLUMNS
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row[c] for c in header) + ' |' for row in rows]
    return '\n'.join(lines)


if __name__ == '__main__':
    print(format_spectral_table(spectral_table(names=ALL_BLOCK_NAMES)))
