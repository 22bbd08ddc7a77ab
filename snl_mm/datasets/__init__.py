"""Datasets the package generates itself (no download): a benchmark of long-range relations.

=========================  ========================================================  =================
dataset                    the label relates                                         toolbox
=========================  ========================================================  =================
``RelationDataset``        two distant objects: same colour?                         mmpretrain
``MajorityDataset``        several distant objects: does one colour hold a majority  mmpretrain
``PathfinderDataset``      two markers: joined by a curve?                           mmpretrain
``VideoRelationDataset``   two objects at distant moments of a clip: same colour?    mmaction2
=========================  ========================================================  =================
"""
from snl_mm.utils import is_installed
from .generated import PALETTE, SHAPES, SPLITS
from .majority import MajorityDataset
from .pathfinder import PathfinderDataset
from .relation import RelationDataset

__all__ = ['RelationDataset', 'MajorityDataset', 'PathfinderDataset', 'PALETTE', 'SHAPES', 'SPLITS']

if is_installed('mmaction'):  # the video task is an mmaction2 dataset
    from .video import VideoRelationDataset  # noqa: F401
    __all__.append('VideoRelationDataset')
