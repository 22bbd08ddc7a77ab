"""The channel graph (DANet's CAM): a ``c x c`` softmax over channel energies summed over positions, applied to the
channels of token-layout signals; against float64 references written from the formula, in every order of the
Chebyshev filter, and in float32 under autocast."""
import pytest
import torch

from snl_mm.blocks import GraphNonlocalBlock
from snl_mm.graph import AFFINITIES, ChannelGraph, build_affinity
from tests.helpers import randomise_, rel_err


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def reference_affinity(q: torch.Tensor, k: torch.Tensor, negate: bool = True, scale: float = 1.0) -> torch.Tensor:
    """``A_cd = exp(+-s E_cd) / sum_d exp(+-s E_cd)``, ``E_cd = sum_n q_nc k_nd`` (float64; the row's extreme
    subtracted before the exponential, which a softmax ignores)."""
    energy = scale * torch.einsum('bnc,bnd->bcd', q, k)
    logits = -energy if negate else energy
    weights = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    return weights / weights.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize('negate', [True, False])
def test_dense_and_product_equal_the_formula(negate):
    q, k, z = _randn(2, 13, 5, seed=1), _randn(2, 13, 5, seed=2), _randn(2, 13, 5, seed=3)
    op = ChannelGraph(negate=negate, scale=0.3)(q, k, (13, ))
    a = reference_affinity(q, k, negate, 0.3)
    assert op.dense().shape == (2, 5, 5)
    assert rel_err(op.dense(), a) < 1e-12
    assert torch.allclose(op.dense().sum(-1), torch.ones(2, 5, dtype=torch.float64), atol=1e-14)
    # A acts on the channel vertices; the positions are the features: z A^T in token layout
    assert rel_err(op.matmul(z), z @ a.transpose(1, 2)) < 1e-12


def test_danet_sign_is_a_softmax_of_the_negated_energies():
    """``softmax(max(E) - E)`` (how DANet computes it) is ``softmax(-E)``: a channel attends most to the channels it
    correlates with least."""
    x = _randn(1, 20, 4, seed=4)
    a = ChannelGraph()(x, x).dense()[0]
    energy = x[0].T @ x[0]
    assert torch.equal(a.argmax(-1), energy.argmin(-1))
    assert rel_err(a, torch.softmax(-energy, dim=-1)) < 1e-12


def test_registered_and_validated():
    assert AFFINITIES['channel_graph'] is ChannelGraph
    graph = build_affinity(dict(type='channel_graph', negate=False))
    assert isinstance(graph, ChannelGraph) and not graph.negate
    assert graph.notation == 'D_M^-1 M, M = exp(E)' and ChannelGraph().notation == 'D_M^-1 M, M = exp(-E)'
    with pytest.raises(TypeError, match='negate must be True or False'):
        ChannelGraph(negate=1)
    with pytest.raises(ValueError, match=r"scale must be a number > 0 or 'inv_sqrt'"):
        ChannelGraph(scale=0)
    with pytest.raises(ValueError, match=r'one shape \(B, N, c\)'):
        ChannelGraph()(_randn(1, 5, 3), _randn(1, 5, 4))


def test_energies_run_in_float32_under_float16_autocast():
    """Energies summed over positions leave float16's range (``64 x 40^2 ~ 1e5 > 65504``): they and the softmax run
    in float32; the product with the row-stochastic ``A`` in float16 stays close to float32."""
    x = 40 * _randn(2, 64, 6, seed=5, dtype=torch.float32).abs()
    expected = ChannelGraph()(x, x).matmul(x)
    with torch.autocast('cpu', dtype=torch.float16):
        op = ChannelGraph()(x, x)
        out = op.matmul(x)
    assert op.dense().dtype == torch.float32 and out.dtype == torch.float16
    assert torch.isfinite(out).all()
    assert rel_err(out.float(), expected) < 2e-3


def _graph_block_reference(block: GraphNonlocalBlock, x: torch.Tensor) -> torch.Tensor:
    """``X + BN(sum_k T_k(A) Z W_{k+1})`` on the channel graph of ``theta``/``phi``, float64, from the formula:
    ``T_0 = Z``, ``T_1 = Z A^T``, ``T_k = 2 T_{k-1} A^T - T_{k-2}`` (``A`` acting on the channels of ``Z = g(X)``)."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)

    def conv(t, m):  # (B, in, N) -> (B, out, N)
        return m.weight.reshape(m.weight.shape[0], -1) @ t

    q, k, z = (conv(xf, m).transpose(1, 2) for m in (block.theta, block.phi, block.g))
    a = reference_affinity(q, k)
    terms = [z, z @ a.transpose(1, 2)]
    for _ in range(2, block.filter_spec.order):
        terms.append(2 * terms[-1] @ a.transpose(1, 2) - terms[-2])
    out = sum(conv(t.transpose(1, 2), getattr(block, f'w{i + 1}')) for i, t in enumerate(terms))
    bn = block.norm
    out = (out - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + bn.eps)
    out = out * bn.weight[None, :, None] + bn.bias[None, :, None]
    return (xf + out).reshape(x.shape)


@pytest.mark.parametrize('order', [2, 3, 4])
def test_any_chebyshev_order_in_the_graph_block(order):
    """``GraphNonlocalBlock(affinity=dict(type='channel_graph'))``: Chebyshev terms are powers of the ``Cs x Cs``
    graph applied to the channels of ``g(X)``; float64 against the formula."""
    block = GraphNonlocalBlock(8, affinity=dict(type='channel_graph'), graph_filter=dict(order=order))
    block = randomise_(block, std=0.3, seed=order).double().eval()
    x = _randn(2, 8, 4, 5, seed=6)
    with torch.no_grad():
        assert rel_err(block(x), _graph_block_reference(block, x)) < 1e-10
    assert block.spectral_form()['affinity'] == 'D_M^-1 M, M = exp(-E)'
