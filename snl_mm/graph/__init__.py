"""The math of nonlocal blocks, free of OpenMMLab: affinities (graphs), Chebyshev graph filters, the cost
model that picks an order of products, criss-cross attention, and the precision policy under autocast
(:mod:`snl_mm.graph.precision`)."""
from .affinity import (AFFINITIES, KERNELS, NORMALIZATIONS, Affinity, DenseOperator, GraphOperator,
                       LowRankOperator, SoftmaxOperator, build_affinity, register_affinity)
from .channel_affinity import CHANNEL_KERNELS, ChannelAffinity, taylor_features
from .cost import PATHS, choose_path
from .criss_cross import CRISS_CROSS_RANKS, CrissCross, CrissCrossOperator, criss_cross_attention, criss_cross_mask
from .double_attention import DoubleAttention, double_attention
from .filters import FilterSpec, chebyshev_basis, graph_filter

__all__ = [
    'AFFINITIES', 'build_affinity', 'register_affinity', 'Affinity', 'GraphOperator', 'DenseOperator', 'SoftmaxOperator', 'LowRankOperator', 'KERNELS',
    'NORMALIZATIONS', 'PATHS', 'choose_path', 'FilterSpec', 'chebyshev_basis', 'graph_filter',
    'ChannelAffinity', 'CHANNEL_KERNELS', 'taylor_features', 'CrissCrossOperator', 'criss_cross_attention',
    'criss_cross_mask', 'CRISS_CROSS_RANKS', 'CrissCross', 'DoubleAttention', 'double_attention'
]
