"""Datasets the package generates itself (no download)."""
from .relation import PALETTE, SHAPES, RelationDataset

__all__ = ['RelationDataset', 'PALETTE', 'SHAPES']
