"""The catalogue answers "which modules are the package's blocks" once, and reads the paper's Table 1 off the code."""
import torch.nn as nn

import pytest

from snl_mm.blocks import (BLOCK_NAMES, FAMILY_NAMES, GraphNonlocalBlock, NonlocalBase, find_blocks,
                           format_spectral_table, is_nonlocal_block, registered_blocks, spectral_table)
from snl_mm.registry import ROOT_MODELS

# Table 1 of the paper, its five rows and SNL (Eq. 5), in the notation the code prints: ``M_hat = (M + M^T) / 2``,
# ``C.M`` the criss-cross mask applied to ``M``; the filter of the "Unify" row is ``sum_k T_k(A) Z W_k`` (Chebyshev
# terms, see snl_mm/graph/filters.py).
PAPER_TABLE1 = {
    'NLBlock': ('N', 'N x N', 'D_M^-1 M', 'X W_Z', 'A Z W'),
    'NSBlock': ('N', 'N x N', 'D_M^-1 M', 'X W_Z', '-Z W + A Z W'),
    'A2Block': ('N', 'N x N', 'M_bar', 'X W_Z', 'A Z W'),
    'CGNLBlock': ('N Cs', 'N Cs x N Cs', 'M^f', 'vec(X W_Z)', 'A Z W'),
    'CCBlock': ('N', 'N x N', 'D_(C.M)^-1 (C.M)', 'X', 'A Z W'),
    'SNLBlock': ('N', 'N x N', 'D_M^-1/2 M_hat D_M^-1/2', 'X W_Z', 'Z W_1 + A Z W_2'),
}


# The rest of the family in the same notation: ``M_w`` the kernel of whitened (position-centred) embeddings, ``1 s^T``
# the query-independent rank-one affinity of attention pooling (``1 1^T / N``: average pooling).
FAMILY_TABLE1 = {
    'DNLBlock': ('N', 'N x N', 'D_M_w^-1 M_w + 1 s^T', 'X W_Z', 'A Z W'),
    'GCBlock': ('N', 'N x N', '1 s^T', 'X', 'A Z W'),
    'LinearAttentionBlock': ('N', 'N x N', 'M, M = softmax_c(Q) softmax_N(K)^T', 'X W_Z', 'A Z W'),
    # DANet: position attention, and channel attention on a graph of the C channels (energies E = X^T X)
    'PAMBlock': ('N', 'N x N', 'D_M^-1 M', 'X W_Z', 'A Z W'),
    'CAMBlock': ('C', 'C x C', 'D_M^-1 M, M = exp(-E)', 'X^T', 'A Z W'),
    # EMA: the rank-K reconstruction Z mu^T = Z D_mu^-1 Z~^T X; the ReLU sits between A Z and W
    'EMABlock': ('N', 'N x N', 'Z D_mu^-1 Z~^T', 'X W_Z', 'relu(A Z) W'),
    # ANN: the queries attend to S anchors, the keys pooled by P (M = exp(s Q (P K)^T), N x S); AFNB's keys and values
    # come from a second map X_c of N_c positions
    'APNBBlock': ('N', 'N x N', 'D_M^-1 M P', 'X W_Z', 'A Z W'),
    'AFNBBlock': ('N', 'N x N_c', 'D_M^-1 M P', 'X_c W_Z', 'A Z W'),
    # ISA: two relations in sequence, each a softmax within groups (G_l: long-range, G_s: short-range)
    'ISABlock': ('N', 'N x N', 'D_(G_l.M)^-1 (G_l.M), then D_(G_s.M)^-1 (G_s.M)', 'X W_Z', 'A Z W'),
}


@pytest.mark.parametrize('name', FAMILY_NAMES)
def test_family_rows_are_read_off_the_blocks(name):
    (row, ) = spectral_table(names=[name])
    assert (row['vertices'], row['edges'], row['affinity'], row['node_feature'], row['filter']) == \
        FAMILY_TABLE1[name], row


def test_table1_is_read_off_the_blocks():
    rows = spectral_table()
    print('\n' + format_spectral_table(rows))
    assert [row['block'] for row in rows] == list(BLOCK_NAMES)
    for row in rows:
        assert (row['vertices'], row['edges'], row['affinity'], row['node_feature'], row['filter']) == \
            PAPER_TABLE1[row['block']], row


def test_gsnl_and_configured_blocks_print_their_own_row():
    gsnl = ROOT_MODELS.build(dict(type='SNLBlock', in_channels=8, order=4)).spectral_form()
    assert gsnl['filter'] == 'Z W_1 + A Z W_2 + T_2(A) Z W_3 + T_3(A) Z W_4'
    ns_on_snl_graph = GraphNonlocalBlock(8, graph_filter=dict(order=2, terms=(0, 1), shared_coefficients=(-1, 1)))
    assert ns_on_snl_graph.spectral_form()['affinity'] == 'D_M^-1/2 M_hat D_M^-1/2'
    assert ns_on_snl_graph.spectral_form()['filter'] == '-Z W + A Z W'


def test_registered_blocks_and_membership():
    blocks = registered_blocks()
    assert set(BLOCK_NAMES) | {'GraphNonlocalBlock'} <= set(blocks)
    assert all(issubclass(cls, NonlocalBase) for cls in blocks.values())
    assert 'NonLocal2d' not in blocks  # mmcv's module is a plugin layer, not one of the package's blocks
    block = ROOT_MODELS.build(dict(type='SNLBlock', in_channels=8))
    assert is_nonlocal_block(block) and not is_nonlocal_block(nn.Conv2d(8, 8, 1))


def test_find_blocks_returns_the_outermost():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), ROOT_MODELS.build(dict(type='NSBlock', in_channels=8, num_units=2)),
                          ROOT_MODELS.build(dict(type='CCBlock', in_channels=8)))
    assert list(find_blocks(model)) == ['1', '2']
