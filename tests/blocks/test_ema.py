"""EMABlock, EMANet's expectation-maximisation attention unit (Li et al. 2019): float64 against a reference written
from the formulas (both fusions, train and eval, the moving average), float32 against mmsegmentation's EMA unit with
the same state dict (outputs, gradients, buffers), the gradient modes, identity at init, arguments."""
import copy

import pytest
import torch
import torch.nn.functional as F

from snl_mm.blocks import EMABlock
from snl_mm.graph import EMOperator
from snl_mm.utils import mmseg_available
from tests.blocks.reference import batch_norm, conv1x1
from tests.helpers import randomise_, rel_err

SHAPES = {1: (2, 16, 7), 2: (2, 16, 4, 5), 3: (2, 16, 2, 3, 4)}


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _block(seed=0, **kwargs) -> EMABlock:
    block = randomise_(EMABlock(16, num_bases=5, **kwargs), std=0.3, seed=seed).double()
    with torch.no_grad():
        bases = _x((1, 16, 5), seed=seed + 100)
        block.ema_module.bases.copy_(bases / bases.norm(dim=1, keepdim=True))
    return block


def ema_reference(block: EMABlock, x: torch.Tensor, training: bool):
    """The unit from the formulas (float64, channels-first ``(B, C, N)``): ``Z = W_m X + b``; ``T`` EM iterations
    ``R = softmax_K(Z^T mu)``, ``mu = Z R~ / ||Z R~||`` (``R~``: ``R`` over its column sums); the reconstruction
    ``mu R^T``; ``Y = X + BN(W_o relu(mu R^T))`` (then ReLU for ``residual_relu``); in training the bases move to
    ``(1 - m) bases + m normalize(mean_B mu)``.

    Returns:
        tuple: the output and the bases after the call.
    """
    xf = x.reshape(*x.shape[:2], -1)
    z = conv1x1(xf, block.ema_mid_conv.conv)
    mu = block.ema_module.bases.expand(x.shape[0], -1, -1)
    for _ in range(block.num_stages):
        logits = z.transpose(1, 2) @ mu
        r = torch.exp(logits - logits.max(dim=2, keepdim=True).values)
        r = r / r.sum(dim=2, keepdim=True)
        m = z @ (r / r.sum(dim=1, keepdim=True))
        mu = m / torch.sqrt((m ** 2).sum(dim=1, keepdim=True))
    recon = mu @ r.transpose(1, 2)
    out = batch_norm(conv1x1(F.relu(recon), block.ema_out_conv.conv), block.ema_out_conv.bn, training)
    y = xf + out
    if block.fusion == 'residual_relu':
        y = F.relu(y)
    bases = block.ema_module.bases
    if training:
        target = mu.mean(dim=0, keepdim=True)
        target = target / torch.sqrt((target ** 2).sum(dim=1, keepdim=True))
        bases = (1 - block.momentum) * bases + block.momentum * target
    return y.reshape(x.shape), bases


@pytest.mark.parametrize('fusion', ['residual', 'residual_relu'])
@pytest.mark.parametrize('rank', sorted(SHAPES))
def test_float64_equals_the_formula(rank, fusion):
    for training in (False, True):
        block = _block(seed=rank, fusion=fusion).train(training)
        x = _x(SHAPES[rank], seed=rank)
        expected, bases = ema_reference(block, x, training)
        with torch.no_grad():
            y = block(x)
        assert rel_err(y - x, expected - x) < 1e-10, (training, rel_err(y - x, expected - x))
        assert rel_err(block.ema_module.bases, bases) < 1e-12, training


def test_identity_at_init_keys_and_table_row():
    block = EMABlock(16)
    x = _x(SHAPES[2], dtype=torch.float32)
    for training in (True, False):
        assert torch.equal(block.train(training)(x), x)
    assert not torch.equal(EMABlock(16, fusion='residual_relu')(x), x)  # EMANet's head form clips X's negative part
    assert sorted(block.state_dict()) == [
        'ema_mid_conv.conv.bias', 'ema_mid_conv.conv.weight', 'ema_module.bases', 'ema_out_conv.bn.bias',
        'ema_out_conv.bn.num_batches_tracked', 'ema_out_conv.bn.running_mean', 'ema_out_conv.bn.running_var',
        'ema_out_conv.bn.weight', 'ema_out_conv.conv.weight']
    assert tuple(block.ema_module.bases.shape) == (1, 16, 64) and (block.num_stages, block.momentum) == (3, 0.1)
    assert block.spectral_form() == dict(vertices='N', edges='N x N', affinity='Z D_mu^-1 Z~^T',
                                         node_feature='X W_Z', filter='relu(A Z) W')
    # the mid convolution keeps mmcv's (Kaiming) initialisation: it is never trained
    assert block.ema_mid_conv.conv.weight.std() > 0.1


def test_affinity_for_analysis_leaves_the_bases():
    block = _block().train()
    x = _x(SHAPES[2])
    before = block.ema_module.bases.clone()
    op = block.graph_operator(x)
    assert isinstance(op, EMOperator) and block.affinity(x).shape == (2, 20, 20)
    assert torch.equal(block.ema_module.bases, before)
    block(x)
    assert not torch.equal(block.ema_module.bases, before)


def test_gradient_modes():
    """``'none'`` (EMANet): the reconstruction carries no gradient, ``ema_mid_conv`` is frozen, the input's gradient
    is the residual's; ``'signal'``: ``A`` constant, ``Z`` differentiated; ``'full'``: exact (gradcheck)."""
    x = _x(SHAPES[2], seed=3).requires_grad_()
    w = _x(SHAPES[2], seed=4)
    block = _block(seed=2).eval()
    assert not any(p.requires_grad for p in block.ema_mid_conv.parameters())
    (block(x) * w).sum().backward()
    assert torch.equal(x.grad, w)
    assert block.ema_out_conv.conv.weight.grad.abs().sum() > 0

    signal = _block(seed=2, grad='signal').eval()
    assert all(p.requires_grad for p in signal.ema_mid_conv.parameters())
    x.grad = None
    (signal(x) * w).sum().backward()
    assert not torch.equal(x.grad, w) and signal.ema_mid_conv.conv.weight.grad.abs().sum() > 0
    # A constant: the gradient of A Z with respect to Z through the factors
    op = signal.graph_operator(x)
    xs = x.detach().requires_grad_()
    z = signal.node_features(signal, xs)
    assert rel_err(signal(xs) - xs, signal.residual(xs, signal.ema_out_conv(F.relu(
        op.dense().to(z.dtype).matmul(z).transpose(1, 2).unsqueeze(-1))), None, None) - xs) < 1e-12

    for grad in ('signal', 'full'):
        small = randomise_(EMABlock(4, num_bases=3, num_stages=2, grad=grad), std=0.5, seed=5).double().eval()
        xs = _x((1, 4, 2, 3), seed=6).requires_grad_()
        if grad == 'full':
            assert torch.autograd.gradcheck(small, (xs, ))
        else:  # A is a constant of autograd: check the gradient with the EM factors held fixed
            op = small.graph_operator(xs.detach())

            def fixed_affinity(t, op=op, small=small):
                z = small.node_features(small, t)
                filtered = small.ema_out_conv(F.relu(op.matmul(z).transpose(1, 2).unsqueeze(-1)))
                return small.residual(t, filtered, None, None)

            assert torch.autograd.gradcheck(fixed_affinity, (xs, ))
            g = torch.autograd.grad(small(xs).sum(), xs)[0]
            assert rel_err(g, torch.autograd.grad(fixed_affinity(xs).sum(), xs)[0]) < 1e-12


@pytest.mark.parametrize('grad, conv_cfg, folds', [('none', None, True), ('full', None, True),
                                                   ('signal', None, False),
                                                   ('none', dict(type='Conv2dAdaptivePadding'), False)])
def test_features_folded_into_the_iterations(grad, conv_cfg, folds):
    """``Z = X W_m + b`` is formed only where ``A Z`` is not the reconstruction (``grad='signal'``) or ``ema_mid_conv``
    is not a plain 1x1 convolution; either way the block computes the formula."""
    block = _block(seed=7, grad=grad, conv_cfg=conv_cfg).eval()
    calls = []
    block.ema_mid_conv.register_forward_hook(lambda *args: calls.append(1))
    x = _x(SHAPES[2], seed=8)
    expected, _ = ema_reference(block, x, False)
    assert block.folds_features is folds
    with torch.no_grad():
        y = block(x)
    assert bool(calls) is not folds
    assert rel_err(y - x, expected - x) < 1e-10


def test_arguments():
    with pytest.raises(ValueError, match=r"EMABlock: fusion must be one of \('residual', 'residual_relu'\)"):
        EMABlock(8, fusion='concat')
    with pytest.raises(ValueError, match=r"EMABlock: grad must be one of \('none', 'signal', 'full'\)"):
        EMABlock(8, grad='all')
    with pytest.raises(ValueError, match='EMABlock: EM affinity: num_bases must be a positive integer'):
        EMABlock(8, num_bases=0)
    with pytest.raises(ValueError, match=r'EMABlock: EM affinity: momentum must be a number in \[0, 1\]'):
        EMABlock(8, momentum=-0.1)
    no_norm = EMABlock(8, norm_cfg=None)
    assert no_norm.ema_out_conv.conv.bias is not None and not no_norm.ema_out_conv.with_norm
    x = _x((2, 8, 3, 3), dtype=torch.float32)
    assert torch.equal(no_norm(x), x)


def _forward_backward(module: torch.nn.Module, x: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    (y * _x(y.shape, seed=9, dtype=y.dtype)).sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
    return y.detach(), x.grad, grads


@pytest.mark.skipif(not mmseg_available(), reason='mmsegmentation needs a compiled mmcv')
@pytest.mark.parametrize('fusion', ['residual', 'residual_relu'])
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_float32_equals_mmsegmentation(training, fusion):
    """mmsegmentation's ``EMAModule`` with mmcv's convolutions as ``EMAHead`` runs them loads the block's state dict
    strictly: outputs, input and parameter gradients, and (in training) the bases and BN statistics agree."""
    from snl_mm.analysis.benchmark.references import MMSegEMAUnit
    block = randomise_(EMABlock(32, num_bases=8, fusion=fusion), std=0.2, seed=7)
    upstream = MMSegEMAUnit(32, 8, 3, 0.1, relu_after=fusion == 'residual_relu')
    upstream.load_state_dict(block.state_dict(), strict=True)
    block.train(training), upstream.train(training)
    x = torch.relu(_x((2, 32, 9, 11), seed=8, dtype=torch.float32))
    y, gx, grads = _forward_backward(block, x)
    y_ref, gx_ref, grads_ref = _forward_backward(upstream, x)
    assert rel_err(y - x, y_ref - x) < 1e-5
    assert rel_err(gx, gx_ref) < 1e-5
    assert grads.keys() == grads_ref.keys() == {'ema_out_conv.conv.weight', 'ema_out_conv.bn.weight',
                                                'ema_out_conv.bn.bias'}
    for key in grads:
        assert rel_err(grads[key], grads_ref[key]) < 1e-4, key
    state, state_ref = block.state_dict(), upstream.state_dict()
    for key in state:
        assert rel_err(state[key].float(), state_ref[key].float()) < 1e-5 or torch.equal(state[key], state_ref[key])
    # a second step starts from the moved bases on both sides
    y2, _, _ = _forward_backward(block, x.flip(0))
    y2_ref, _, _ = _forward_backward(upstream, x.flip(0))
    assert rel_err(y2 - x.flip(0), y2_ref - x.flip(0)) < 1e-5
    assert copy.deepcopy(block).eval()(x).shape == x.shape
