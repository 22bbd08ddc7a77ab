"""PAMBlock and CAMBlock, DANet's position and channel attention (Fu et al. 2019): float64 against references written
from the formulas on every rank, float32 against mmsegmentation's ``PAM`` and ``CAM`` with the same state dict
(outputs and gradients), gradcheck, identity at init, arguments."""
import pytest
import torch

from snl_mm.blocks import CAMBlock, PAMBlock
from snl_mm.graph import ChannelGraphOperator, SoftmaxOperator
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import mmseg_available
from tests.blocks.reference import conv1x1
from tests.helpers import randomise_, rel_err

SHAPES = {1: (2, 16, 7), 2: (2, 16, 4, 5), 3: (2, 16, 2, 3, 4)}
needs_mmseg = pytest.mark.skipif(not mmseg_available(), reason='mmsegmentation needs a compiled mmcv')


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    weights = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    return weights / weights.sum(dim=-1, keepdim=True)


def pam_reference(block: PAMBlock, x: torch.Tensor) -> torch.Tensor:
    """``X + gamma V A^T``, ``A_ij = exp(q_i . k_j) / sum_l exp(q_i . k_l)`` (channels-first ``(B, C, N)``)."""
    xf = x.reshape(*x.shape[:2], -1)
    q, k, v = (conv1x1(xf, m) for m in (block.query_project, block.key_project, block.value_project))
    a = softmax_rows(q.transpose(1, 2) @ k)
    return (xf + block.gamma.scale * v @ a.transpose(1, 2)).reshape(x.shape)


def cam_reference(block: CAMBlock, x: torch.Tensor) -> torch.Tensor:
    """``X + gamma A X``, ``A_cd = exp(-E_cd) / sum_d exp(-E_cd)``, ``E = X X^T`` over channels (``(B, C, N)``)."""
    xf = x.reshape(*x.shape[:2], -1)
    a = softmax_rows(-(xf @ xf.transpose(1, 2)))
    return (xf + block.gamma.scale * a @ xf).reshape(x.shape)


BLOCKS = {'PAMBlock': (PAMBlock, pam_reference), 'CAMBlock': (CAMBlock, cam_reference)}


@pytest.mark.parametrize('rank', sorted(SHAPES))
@pytest.mark.parametrize('name', sorted(BLOCKS))
def test_float64_equals_the_formula(name, rank):
    cls, reference = BLOCKS[name]
    block = randomise_(cls(16), std=0.3, seed=rank).double()
    x = _x(SHAPES[rank], seed=rank)
    for training in (True, False):
        with torch.no_grad():
            assert rel_err(block.train(training)(x) - x, reference(block, x) - x) < 1e-10, (rank, training)


def test_pam_runs_through_the_softmax_operator_and_cam_on_a_channel_graph():
    pam, cam = randomise_(PAMBlock(16)), randomise_(CAMBlock(16))
    x = _x(SHAPES[2], dtype=torch.float32)
    assert isinstance(pam.graph_operator(x), SoftmaxOperator)
    op = cam.graph_operator(x)
    assert isinstance(op, ChannelGraphOperator) and cam.affinity(x).shape == (2, 16, 16)
    assert pam.affinity(x).shape == (2, 20, 20)
    assert torch.allclose(pam.affinity(x).sum(-1), torch.ones(2, 20), atol=1e-5)


@pytest.mark.parametrize('name', sorted(BLOCKS))
def test_identity_at_init_and_keys(name):
    cls, _ = BLOCKS[name]
    block = cls(16)
    assert block.gamma.scale.item() == 0
    x = _x(SHAPES[2], dtype=torch.float32)
    assert torch.equal(block(x), x)
    keys = sorted(block.state_dict())
    if cls is PAMBlock:
        assert keys == ['gamma.scale', 'key_project.bias', 'key_project.weight', 'query_project.bias',
                        'query_project.weight', 'value_project.bias', 'value_project.weight']
        assert (block.key_channels, block.query_project.out_channels, block.value_project.out_channels) == (2, 2, 16)
    else:
        assert keys == ['gamma.scale']


def test_arguments():
    assert PAMBlock(512).key_channels == 64 and PAMBlock(512, key_channels=32).key_channels == 32
    assert PAMBlock(512, reduction=4).key_channels == 128 and PAMBlock(4).key_channels == 1
    for cls in (PAMBlock, CAMBlock):
        name = cls.__name__
        with pytest.raises(ValueError, match=f'{name}: norm_cfg must be None'):
            cls(16, norm_cfg=dict(type='BN'))
        with pytest.raises(ValueError, match=f'{name}: act_cfg must be None'):
            cls(16, act_cfg=dict(type='ReLU'))
        with pytest.raises(ValueError, match=f'{name}: in_channels must be a positive integer'):
            cls(0)
    with pytest.raises(ValueError, match='PAMBlock: key_channels must be a positive integer'):
        PAMBlock(16, key_channels=0)
    assert ROOT_MODELS.build(dict(type='CAMBlock', in_channels=8)).spectral_form() == dict(
        vertices='C', edges='C x C', affinity='D_M^-1 M, M = exp(-E)', node_feature='X^T', filter='A Z W')


def _forward_backward(module: torch.nn.Module, x: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    (y * _x(y.shape, seed=9, dtype=y.dtype)).sum().backward()
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


@needs_mmseg
@pytest.mark.parametrize('name', sorted(BLOCKS))
def test_float32_equals_mmsegmentation(name):
    """mmsegmentation's ``PAM(C, C / 8)`` / ``CAM()`` loads the block's state dict strictly; outputs, input and
    parameter gradients agree in float32 (no norm: train and eval are the same computation)."""
    from mmseg.models.decode_heads.da_head import CAM, PAM
    cls, _ = BLOCKS[name]
    block = randomise_(cls(32), std=0.2, seed=5)
    upstream = PAM(32, 4) if cls is PAMBlock else CAM()
    upstream.load_state_dict(block.state_dict(), strict=True)
    x = _x((2, 32, 9, 11), seed=6, dtype=torch.float32)
    y, gx, grads = _forward_backward(block, x)
    y_ref, gx_ref, grads_ref = _forward_backward(upstream, x)
    assert rel_err(y - x, y_ref - x) < 1e-5
    assert rel_err(gx, gx_ref) < 1e-5
    assert grads.keys() == grads_ref.keys()
    # The key bias adds q_i^T b to a whole row of logits, which the row softmax removes: its gradient is zero in
    # exact arithmetic and float32 rounding in both, so it is compared on the scale of the other gradients.
    scale = max(float(g.abs().max()) for g in grads_ref.values())
    for key in grads:
        if key == 'key_project.bias':
            assert float((grads[key] - grads_ref[key]).abs().max()) < 1e-5 * scale, key
        else:
            assert rel_err(grads[key], grads_ref[key]) < 1e-4, key
