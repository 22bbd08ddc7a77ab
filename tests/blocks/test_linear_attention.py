"""LinearAttentionBlock: Shen et al.'s efficient attention against a float64 reference written from its formula
(every rank, heads, both orders of products), SNL's normalisation of its graph as a config, gradients and errors."""
import pytest
import torch

from snl_mm.blocks import GraphNonlocalBlock, LinearAttentionBlock
from tests.blocks.reference import chebyshev_matrices, conv1x1, output_norm, tokens
from tests.helpers import randomise_, rel_err

SHAPES = {1: (2, 16, 7), 2: (2, 16, 5, 6), 3: (2, 16, 3, 4, 5)}


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def efficient_attention(queries, keys, values, heads):
    """Shen et al. 2021, Eq. 3 per head: ``rho_q(Q) (rho_k(K)^T V)`` with ``rho_q`` a softmax over each query's
    channels and ``rho_k`` a softmax over the positions of each key channel; ``(B, c, N)`` maps in and out, heads
    concatenated on the channels."""
    outs = []
    for q, k, v in zip(queries.chunk(heads, 1), keys.chunk(heads, 1), values.chunk(heads, 1)):
        rho_q = torch.exp(q) / torch.exp(q).sum(1, keepdim=True)  # over channels
        rho_k = torch.exp(k) / torch.exp(k).sum(2, keepdim=True)  # over positions
        context = rho_k @ v.transpose(1, 2)  # (B, d_k, d_v)
        outs.append(context.transpose(1, 2) @ rho_q)  # (B, d_v, N)
    return torch.cat(outs, 1)


def linear_attention_reference(block, x, training=False):
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    attended = efficient_attention(conv1x1(xf, block.theta), conv1x1(xf, block.phi), conv1x1(xf, block.g),
                                   block.heads)
    y = output_norm(conv1x1(attended, block.w2), block.norm, training)
    return (xf + y).reshape(x.shape)


@pytest.mark.parametrize('path', ['auto', 'dense', 'factored'])
@pytest.mark.parametrize('heads', [1, 2, 8])
@pytest.mark.parametrize('rank', sorted(SHAPES))
def test_matches_the_formula_float64(rank, heads, path):
    block = randomise_(LinearAttentionBlock(16, heads=heads, path=path)).double().eval()
    x = _x(SHAPES[rank])
    assert rel_err(block(x), linear_attention_reference(block, x)) < 1e-10


def test_train_mode_and_no_norm():
    x = _x(SHAPES[2])
    block = randomise_(LinearAttentionBlock(16, heads=2)).double().train()
    assert rel_err(block(x), linear_attention_reference(block, x, training=True)) < 1e-10
    shen = LinearAttentionBlock(16, norm_cfg=None)  # Shen et al.'s form: reprojection added to the input
    assert torch.equal(shen(x.float()), x.float()) and shen.w2.weight.abs().max() == 0
    randomise_(shen).double()
    assert rel_err(shen(x), linear_attention_reference(shen, x)) < 1e-10


def test_affinity_is_row_stochastic_per_head():
    block = randomise_(LinearAttentionBlock(16, heads=2)).double()
    a = block.affinity(_x(SHAPES[2]))
    assert a.shape == (2, 2, 30, 30)
    assert torch.allclose(a.sum(-1), torch.ones(2, 2, 30, dtype=torch.float64))
    assert (a >= 0).all() and torch.linalg.matrix_rank(a).max() <= 4  # Cs / heads = 4
    row = LinearAttentionBlock(16).spectral_form()
    assert row == dict(vertices='N', edges='N x N', affinity='M, M = softmax_c(Q) softmax_N(K)^T', node_feature='X W_Z',
                       filter='A Z W')


def test_snl_normalisation_of_the_efficient_attention_graph():
    """A point of the space no named block takes: the efficient-attention graph, symmetrised and normalised as SNL
    (degrees from the factors), under a third-order Chebyshev filter, against the dense float64 filter."""
    block = GraphNonlocalBlock(16, affinity=dict(kernel='softmax', symmetrize=True, normalize='symmetric'),
                               graph_filter=dict(order=3))
    block = randomise_(block, std=0.3).double().eval()
    x = _x(SHAPES[2])
    xf = x.reshape(2, 16, -1)
    q, k = tokens(conv1x1(xf, block.theta)), tokens(conv1x1(xf, block.phi))
    m = torch.softmax(q, -1) @ torch.softmax(k, 1).transpose(1, 2)
    m = (m + m.transpose(1, 2)) / 2
    d = m.sum(-1)
    a = m / torch.sqrt(d[:, :, None] * d[:, None, :])
    z = tokens(conv1x1(xf, block.g))
    y = sum(conv1x1(tokens(t @ z), getattr(block, f'w{i + 1}')) for i, t in enumerate(chebyshev_matrices(a, 3)))
    assert rel_err(block(x), (xf + output_norm(y, block.norm, False)).reshape(x.shape)) < 1e-10


def test_keys_and_bad_arguments():
    keys = set(LinearAttentionBlock(16).state_dict())
    assert {k.split('.')[0] for k in keys} == {'theta', 'phi', 'g', 'w2', 'norm'}
    assert 'theta.bias' in keys
    with pytest.raises(ValueError, match=r'heads=3 must divide the inner channels 8; valid heads: \[1, 2, 4, 8\]'):
        LinearAttentionBlock(16, heads=3)
    with pytest.raises(ValueError, match='heads must be a positive integer'):
        LinearAttentionBlock(16, heads=0)


def test_flop_count():
    """``get_flops.py``'s counter: the four convolutions and, per head, ``softmax_N(K)^T V`` and the product with
    ``softmax_c(Q)``, ``2 N c^2`` (``c = Cs / heads``): linear in ``N``."""
    from snl_mm.analysis.flops import analyze
    block = LinearAttentionBlock(16, heads=2, path='factored').eval()
    (cost, ) = analyze(torch.nn.Sequential(block), (torch.randn(2, 16, 5, 6), )).blocks
    b, c, cs, n, heads = 2, 16, 8, 30, 2
    assert cost.by_operator['conv'] == b * n * 4 * c * cs
    assert cost.by_operator['bmm'] == b * heads * 2 * n * (cs // heads) ** 2
