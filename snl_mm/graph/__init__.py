"""The math of nonlocal blocks, free of OpenMMLab: affinities (graphs), Chebyshev graph filters, the cost
model that picks an order of products, and criss-cross attention."""
from .affinity import (KERNELS, NORMALIZATIONS, Affinity, DenseOperator, GraphOperator,
                       LowRankOperator, SoftmaxOperator)
from .cost import PATHS, choose_path
from .filters import FilterSpec, chebyshev_basis, graph_filter

__all__ = [
    'Affinity', 'GraphOperator', 'DenseOperator', 'SoftmaxOperator', 'LowRankOperator', 'KERNELS',
    'NORMALIZATIONS', 'PATHS', 'choose_path', 'FilterSpec', 'chebyshev_basis', 'graph_filter'
]
