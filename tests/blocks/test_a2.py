"""A2Block: double attention (Chen et al. 2018) for every rank: identity init, gradients, float64 agreement
with a reference that forms the dense affinity from the math, gradcheck, mixed precision, bad arguments."""
import pytest
import torch
from mmcv.cnn import build_plugin_layer
from tests.blocks.reference import conv1x1, output_norm, randomise_, randomise_norms_, rel_err, tokens

from snl_mm.blocks import A2Block
from snl_mm.registry import ROOT_MODELS

SHAPES = {1: (2, 8, 7), 2: (2, 8, 5, 6), 3: (2, 8, 3, 4, 5)}
RANKS = sorted(SHAPES)


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _random_block(seed=0, **kwargs) -> A2Block:
    return randomise_(A2Block(8, **kwargs), seed=seed).double()


def _softmax(logits: torch.Tensor, dim: int) -> torch.Tensor:
    e = torch.exp(logits - logits.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def a2_affinity(block: A2Block, xf: torch.Tensor) -> torch.Tensor:
    """``A = softmax_desc(V)^T softmax_pos(B)`` as a dense ``(B, N, N)`` matrix; ``xf``: ``(B, C, N)``."""
    gather = _softmax(conv1x1(xf, block.gather), dim=2)  # (B, c_n, N): over positions
    distribute = _softmax(conv1x1(xf, block.distribute), dim=1)  # (B, c_n, N): over descriptors
    return distribute.transpose(1, 2) @ gather


def a2_reference(block: A2Block, x: torch.Tensor, training: bool) -> torch.Tensor:
    """``Y = X + norm(W_out (A F^T)^T)``: position ``i`` receives ``sum_j A_ij F_j``."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    a = a2_affinity(block, xf)
    features = tokens(conv1x1(xf, block.feature))  # (B, N, c_m)
    y = conv1x1(tokens(a @ features), block.out)
    return (xf + output_norm(y, block.norm, training)).reshape(x.shape)


def a2_two_steps(block: A2Block, x: torch.Tensor, training: bool) -> torch.Tensor:
    """The double attention paper's two steps: ``G = F softmax_pos(B)^T``, ``Z = G softmax_desc(V)``."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    f = conv1x1(xf, block.feature)  # (B, c_m, N)
    g = f @ _softmax(conv1x1(xf, block.gather), dim=2).transpose(1, 2)  # (B, c_m, c_n)
    z = g @ _softmax(conv1x1(xf, block.distribute), dim=1)  # (B, c_m, N)
    return (xf + output_norm(conv1x1(z, block.out), block.norm, training)).reshape(x.shape)


def test_defaults_and_num_descriptors():
    block = A2Block(16)
    assert (block.inner_channels, block.num_descriptors) == (8, 8)
    block = A2Block(16, reduction=4, num_descriptors=3)
    assert block.feature.out_channels == 4 and block.out.in_channels == 4
    assert block.gather.out_channels == 3 and block.distribute.out_channels == 3


@pytest.mark.parametrize('rank', RANKS)
def test_gradients_reach_every_parameter(rank):
    block = randomise_norms_(A2Block(8)).eval()
    x = _x(SHAPES[rank], dtype=torch.float32)
    (block(x) * _x(SHAPES[rank], seed=2, dtype=torch.float32)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('rank', RANKS)
def test_matches_reference_float64(rank, training):
    block = _random_block(num_descriptors=3).train(training)
    x = _x(SHAPES[rank])
    y_ref = a2_reference(block, x, training)
    err = rel_err(block(x), y_ref)
    assert err < 1e-10, err
    assert not torch.equal(y_ref, x)
    # the dense-A form is the paper's gather-then-distribute
    assert rel_err(a2_two_steps(block, x, training), y_ref) < 1e-12


def test_group_norm_and_act_match_reference():
    block = _random_block(norm_cfg=dict(type='GN', num_groups=2), act_cfg=dict(type='ReLU'))
    x = _x(SHAPES[3])
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    features = tokens(conv1x1(xf, block.feature))
    y = conv1x1(tokens(a2_affinity(block, xf) @ features), block.out)
    y_ref = (xf + torch.relu(output_norm(y, block.norm, False))).reshape(x.shape)
    assert rel_err(block(x), y_ref) < 1e-10


@pytest.mark.parametrize('rank', RANKS)
def test_affinity_is_dense_row_stochastic(rank):
    block = _random_block(num_descriptors=3)
    x = _x(SHAPES[rank])
    a = block.affinity(x)
    n = x[0, 0].numel()
    assert a.shape == (x.shape[0], n, n)
    assert rel_err(a, a2_affinity(block, x.reshape(*x.shape[:2], -1))) < 1e-12
    assert (a >= 0).all()
    assert torch.allclose(a.sum(-1), torch.ones(x.shape[0], n, dtype=a.dtype), atol=1e-12)
    # rank c_n = 3: the graph is low-rank, not a full N x N kernel
    assert torch.linalg.matrix_rank(a).max() <= 3


def test_checkpoint_keys():
    keys = set(A2Block(8).state_dict())
    assert keys == {
        'feature.weight', 'feature.bias', 'gather.weight', 'gather.bias', 'distribute.weight',
        'distribute.bias', 'out.weight', 'out.bias', 'norm.weight', 'norm.bias', 'norm.running_mean',
        'norm.running_var', 'norm.num_batches_tracked'
    }


def test_3d_kernels_load():
    src = A2Block(8)
    state = {k: (v.unsqueeze(-1) if v.dim() == 4 else v) for k, v in randomise_(src).state_dict().items()}
    dst = A2Block(8)
    dst.load_state_dict(state)
    x = _x(SHAPES[3], dtype=torch.float32)
    assert torch.equal(dst.eval()(x), src.eval()(x))


def test_softmaxes_run_in_float32_under_autocast():
    block = randomise_norms_(A2Block(8)).eval()
    x = _x(SHAPES[2], dtype=torch.float32) * 3
    with torch.autocast('cpu', dtype=torch.bfloat16):
        op = block.graph_operator(x)
        a = block.affinity(x)
        y = block(x)
    assert op.p.dtype == op.q.dtype == torch.float32
    assert a.dtype == torch.float32
    # a bfloat16 softmax would be off by ~1e-3 in its row sums
    assert torch.allclose(a.sum(-1), torch.ones(a.shape[:2]), atol=1e-6)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert rel_err(y, block(x)) < 2e-2


@pytest.mark.parametrize('shape', [(2, 8, 1), (2, 8, 1, 1), (2, 8, 1, 1, 1)])
def test_single_position(shape):
    block = randomise_(A2Block(8)).eval()
    x = _x(shape, dtype=torch.float32)
    for autocast in (False, True):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            y = block(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
    # one position takes everything from itself
    assert torch.allclose(block.affinity(x), torch.ones(2, 1, 1))


def test_registry_and_plugin_build():
    block = ROOT_MODELS.build(dict(type='A2Block', in_channels=8, num_descriptors=2))
    assert isinstance(block, A2Block) and block.num_descriptors == 2
    name, layer = build_plugin_layer(dict(type='A2Block'), in_channels=16, postfix='_1')
    assert name == 'a2_block_1' and isinstance(layer, A2Block) and layer.in_channels == 16


def test_bad_arguments():
    with pytest.raises(ValueError, match=r'num_descriptors must be a positive integer'):
        A2Block(8, num_descriptors=0)
    with pytest.raises(ValueError, match=r'num_descriptors must be a positive integer'):
        A2Block(8, num_descriptors=2.5)
    with pytest.raises(ValueError, match=r'in_channels=9 is not divisible by reduction=2.*valid'):
        A2Block(9)
    with pytest.raises(TypeError, match=r'norm_cfg must be None or a dict with a "type"'):
        A2Block(8, norm_cfg='BN')
    with pytest.raises(ValueError, match=r'was built for in_channels=8'):
        A2Block(8)(torch.zeros(1, 4, 3, 3))
