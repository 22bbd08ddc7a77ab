"""The math of nonlocal blocks, free of OpenMMLab: affinities (graphs), Chebyshev graph filters, the cost
model that picks an order of products, criss-cross attention, and the precision policy under autocast
(:mod:`snl_mm.graph.precision`)."""
from .affinity import (AFFINITIES, KERNELS, NORMALIZATIONS, Affinity, DenseOperator, GraphOperator,
                       LowRankOperator, SoftmaxOperator, build_affinity, register_affinity)
from .anchors import POOL_SCALES, AnchorOperator, PyramidAnchors, pyramid_pool
from .channel_affinity import CHANNEL_KERNELS, ChannelAffinity, taylor_features
from .channel_graph import ChannelGraph, ChannelGraphOperator
from .cost import PATHS, choose_path
from .criss_cross import CRISS_CROSS_RANKS, CrissCross, CrissCrossOperator, criss_cross_attention, criss_cross_mask
from .double_attention import DoubleAttention, double_attention
from .em import EM_GRADS, EM_NORMALIZATIONS, EMAffinity, EMOperator
from .disentangled import DisentangledAffinity
from .filters import FilterSpec, chebyshev_basis, graph_filter
from .interlaced import GROUPINGS, InterlacedAffinity, InterlacedOperator
from .operator import MultiHeadOperator, SumOperator
from .pooling import POOLINGS, PoolingAffinity, RankOneOperator

__all__ = [
    'AFFINITIES', 'build_affinity', 'register_affinity', 'Affinity', 'GraphOperator', 'DenseOperator',
    'SoftmaxOperator', 'LowRankOperator', 'KERNELS',
    'NORMALIZATIONS', 'PATHS', 'choose_path', 'FilterSpec', 'chebyshev_basis', 'graph_filter',
    'ChannelAffinity', 'CHANNEL_KERNELS', 'taylor_features', 'CrissCrossOperator', 'criss_cross_attention',
    'criss_cross_mask', 'CRISS_CROSS_RANKS', 'CrissCross', 'DoubleAttention', 'double_attention',
    'POOL_SCALES', 'PyramidAnchors', 'AnchorOperator', 'pyramid_pool', 'GROUPINGS', 'InterlacedAffinity',
    'InterlacedOperator',
    'SumOperator', 'MultiHeadOperator', 'POOLINGS', 'PoolingAffinity', 'RankOneOperator', 'DisentangledAffinity',
    'ChannelGraph', 'ChannelGraphOperator', 'EMAffinity', 'EMOperator', 'EM_NORMALIZATIONS', 'EM_GRADS'
]
