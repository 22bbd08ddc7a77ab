"""DNLBlock: mmsegmentation's DisentangledNonLocal2d (its state dict, strictly; the same numbers in eval and train
mode), a float64 reference from DNL's formula on every rank and mode, its affinity under a Chebyshev filter of
GraphNonlocalBlock, gradients and errors."""
import pytest
import torch

from snl_mm.blocks import DNLBlock, GraphNonlocalBlock
from snl_mm.utils import mmseg_available
from tests.blocks.reference import chebyshev_matrices, conv1x1, output_norm, softmax_rows, tokens
from tests.helpers import randomise_, rel_err

SHAPES = {1: (2, 16, 7), 2: (2, 16, 5, 6), 3: (2, 16, 3, 4, 5)}
MODES = {'embedded_gaussian': dict(), 'unscaled': dict(use_scale=False), 'dot_product': dict(mode='dot_product'),
         'gaussian': dict(mode='gaussian')}
needs_mmseg = pytest.mark.skipif(not mmseg_available(), reason='mmsegmentation needs a compiled mmcv')


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _centred(t):
    return t - t.mean(1, keepdim=True)


def _unary(xf, conv_mask):
    """``1 s^T`` as ``(B, 1, N)`` rows: ``s = softmax_N(conv_mask(X))``."""
    return softmax_rows(conv1x1(xf, conv_mask))


def dnl_reference(block: DNLBlock, x, training=False):
    """DNL (Yin et al. 2020) as mmsegmentation defines it: ``X + conv_out((A_p + 1 s^T) Z)`` with the pairwise term
    of the centred embeddings, ``softmax(q~ k~^T / (sqrt(Cs) tau))`` (embedded Gaussian), ``softmax(x~ x~^T)``
    (Gaussian) or ``q~ k~^T / N`` (dot product)."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    z = tokens(conv1x1(xf, block.g.conv))
    if block.mode == 'gaussian':
        q = k = _centred(tokens(xf))
    else:
        q, k = _centred(tokens(conv1x1(xf, block.theta.conv))), _centred(tokens(conv1x1(xf, block.phi.conv)))
    logits = q @ k.transpose(1, 2)
    if block.mode == 'dot_product':
        a = logits / logits.shape[-1]
    elif block.mode == 'gaussian':
        a = softmax_rows(logits)
    else:
        scale = block.inner_channels ** -0.5 if block.use_scale else 1.0
        a = softmax_rows(logits * scale / block.temperature)
    y = a @ z + _unary(xf, block.conv_mask) @ z  # (B, 1, N) @ (B, N, Cs) broadcasts over the queries
    y = conv1x1(tokens(y), block.conv_out.conv)
    y = output_norm(y, block.conv_out.norm if block.conv_out.with_norm else None, training)
    return (xf + y).reshape(x.shape)


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('rank', sorted(SHAPES))
@pytest.mark.parametrize('mode', list(MODES))
def test_matches_the_formula_float64(mode, rank, training):
    block = randomise_(DNLBlock(16, **MODES[mode])).double().train(training)
    x = _x(SHAPES[rank])
    assert rel_err(block(x), dnl_reference(block, x, training)) < 1e-10


def _upstream(mode: str, norm: bool):
    from mmseg.models.decode_heads.dnl_head import DisentangledNonLocal2d
    kwargs = dict(use_scale=MODES[mode].get('use_scale', True), mode=MODES[mode].get('mode', 'embedded_gaussian'))
    return DisentangledNonLocal2d(16, reduction=2, norm_cfg=dict(type='BN') if norm else None, temperature=0.05,
                                  **kwargs)


@needs_mmseg
@pytest.mark.parametrize('norm', [True, False], ids=['bn', 'no_norm'])
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('mode', ['embedded_gaussian', 'unscaled', 'dot_product'])
def test_matches_mmseg_disentangled_nonlocal(mode, training, norm):
    """The state dict of mmsegmentation's module loads strictly; output and input gradient agree (float32)."""
    ref = randomise_(_upstream(mode, norm), std=0.3).train(training)
    block = DNLBlock(16, norm_cfg=dict(type='BN') if norm else None, **MODES[mode]).train(training)
    assert set(block.state_dict()) == set(ref.state_dict())
    block.load_state_dict(ref.state_dict(), strict=True)
    x = _x(SHAPES[2], dtype=torch.float32).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = block(x), ref(x_ref)
    assert rel_err(y - x, y_ref - x_ref) < 1e-5
    w = _x(SHAPES[2], seed=2, dtype=torch.float32)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    assert rel_err(x.grad, x_ref.grad) < 1e-5


@needs_mmseg
def test_gaussian_mode_differs_from_mmseg_only_by_its_in_place_centring():
    """Upstream's Gaussian mode centres a view of its input in place: its residual is ``X - mean(X)`` (and the
    caller's tensor changes). Everything else agrees: ours = upstream + mean over positions."""
    ref = randomise_(_upstream('gaussian', True), std=0.3).eval()
    block = DNLBlock(16, mode='gaussian').eval()
    block.load_state_dict(ref.state_dict(), strict=True)
    x = _x(SHAPES[2], dtype=torch.float32)
    upstream_input = x.clone()
    y_ref = ref(upstream_input)
    assert not torch.equal(upstream_input, x)  # upstream changed its input
    y = block(x)
    assert rel_err(y, y_ref + x.mean((2, 3), keepdim=True)) < 1e-5


def test_affinity_and_table1_row():
    block = randomise_(DNLBlock(16)).double()
    x = _x(SHAPES[2])
    xf = x.reshape(2, 16, -1)
    q = _centred(tokens(conv1x1(xf, block.theta.conv)))
    k = _centred(tokens(conv1x1(xf, block.phi.conv)))
    a = softmax_rows(q @ k.transpose(1, 2) / (8 ** 0.5 * 0.05)) + _unary(xf, block.conv_mask)
    assert rel_err(block.affinity(x), a) < 1e-12
    assert block.spectral_form() == dict(vertices='N', edges='N x N', affinity='D_M_w^-1 M_w + 1 s^T',
                                         node_feature='X W_Z', filter='A Z W')


@pytest.mark.parametrize('rank', [1, 2])
def test_disentangled_affinity_with_a_chebyshev_filter(rank):
    """``GraphNonlocalBlock(affinity=dict(type='disentangled'), graph_filter=dict(order=3))``:
    ``X + BN(Z W_1 + A Z W_2 + T_2(A) Z W_3)`` with DNL's affinity (its unary logits projected from the keys, their
    ``channels`` filled in by the block), against the dense float64 filter."""
    block = GraphNonlocalBlock(16, affinity=dict(type='disentangled', temperature=0.5),
                               graph_filter=dict(order=3))
    block = randomise_(block, std=0.3).double().eval()
    assert 'affinity_module.unary.mask.weight' in block.state_dict()
    x = _x(SHAPES[rank])
    xf = x.reshape(2, 16, -1)
    q, k = tokens(conv1x1(xf, block.theta)), tokens(conv1x1(xf, block.phi))
    mask = block.graph.unary.mask
    s = softmax_rows((k @ mask.weight.T + mask.bias).transpose(1, 2))  # (B, 1, N)
    a = softmax_rows(_centred(q) @ _centred(k).transpose(1, 2) / (8 ** 0.5 * 0.5)) + s
    z = tokens(conv1x1(xf, block.g))
    y = sum(conv1x1(tokens(t @ z), getattr(block, f'w{i + 1}')) for i, t in enumerate(chebyshev_matrices(a, 3)))
    expected = (xf + output_norm(y, block.norm, False)).reshape(x.shape)
    assert rel_err(block(x), expected) < 1e-10


def test_bad_arguments():
    with pytest.raises(ValueError, match='sub_sample must be False: the unary term'):
        DNLBlock(16, sub_sample=True)
    with pytest.raises(ValueError, match='temperature must be a number > 0, got 0'):
        DNLBlock(16, temperature=0)
    with pytest.raises(ValueError, match=r"mode must be one of \('embedded_gaussian', 'gaussian', 'dot_product'\)"):
        DNLBlock(16, mode='concatenation')


@needs_mmseg
def test_benchmark_reference_is_mmsegs_module():
    """``benchmark_blocks.py``'s reference of DNL: mmsegmentation's DisentangledNonLocal2d with the block's weights
    (not mmcv's NonLocal2d, although DNLBlock is an NLBlock)."""
    from mmseg.models.decode_heads.dnl_head import DisentangledNonLocal2d

    from snl_mm.analysis.benchmark import Case, build_block, reference
    shape = (2, 16, 5, 7)
    block = build_block(Case('DNLBlock', shape)).eval()
    ref, why = reference('mmcv', block, shape)
    assert why == '' and type(ref) is DisentangledNonLocal2d
    x = _x(shape, dtype=torch.float32)
    assert rel_err(block(x) - x, ref.eval()(x.clone()) - x) < 1e-5
    assert 'in place' in reference('mmcv', build_block(Case('DNLBlock', shape, dict(mode='gaussian'))), shape)[1]


def test_flop_count():
    """``get_flops.py``'s counter sees every product: NL's convolutions, the fused pairwise attention
    ``N^2 (Cs + Cs)``, the unary logits ``C N`` and context ``Cs N`` per sample."""
    from snl_mm.analysis.flops import analyze
    (cost, ) = analyze(torch.nn.Sequential(DNLBlock(16).eval()), (torch.randn(2, 16, 5, 6), )).blocks
    b, c, cs, n = 2, 16, 8, 30
    assert cost.by_operator['conv'] == b * n * 4 * c * cs
    assert cost.by_operator['scaled_dot_product_attention'] == b * n * n * 2 * cs
    assert cost.by_operator['bmm'] == b * c * n + b * cs * n  # the unary logits, then the context
