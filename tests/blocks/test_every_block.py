"""What every block (and each of its modes that changes the numerics) guarantees, on every rank it takes: the
shape is kept and a freshly built block, or one whose ``init_weights`` ran again, is the identity; no NaN or
Inf in the output or the affinity on degenerate, huge and tiny inputs or a one-position map, in float32 and
under bfloat16 autocast (normalisations in float32), with random weights and norms; a bfloat16 module keeps
its dtype."""
import copy

import pytest
import torch

import snl_mm  # noqa: F401 (registers the blocks)
from snl_mm.registry import ROOT_MODELS
from tests.blocks.reference import randomise_, rel_err

C = 16
# the six blocks with their defaults, plus the other modes and kernels that change the numerics
VARIANTS = {
    'NLBlock': dict(),
    'NLBlock-gaussian': dict(mode='gaussian'),
    'NLBlock-dot_product': dict(mode='dot_product'),
    'NLBlock-sub_sample': dict(sub_sample=True),
    'NSBlock': dict(num_units=2),
    'A2Block': dict(),
    'CGNLBlock': dict(),
    'CGNLBlock-dot-g2-scale': dict(kernel='dot', groups=2, use_scale=True),
    'CGNLBlock-gaussian': dict(kernel='gaussian', groups=2),
    'CGNLBlock-gaussian-g4-o2': dict(kernel='gaussian', groups=4, order=2, gamma=0.05, use_scale=True),
    'CCBlock': dict(),
    'SNLBlock': dict(),
    'SNLBlock-order3-dense': dict(order=3, path='dense'),
    'SNLBlock-order3-factored': dict(order=3, path='factored'),
    'SNLBlock-order3-units2': dict(order=3, num_units=2),
    'GraphNonlocalBlock': dict(),
    'GraphNonlocalBlock-exp-symmetric': dict(
        affinity=dict(kernel='exp_dot', symmetrize=True, normalize='symmetric')),
}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


SPATIAL = {1: (7, ), 2: (5, 6), 3: (3, 4, 5)}
INPUTS = {
    'zeros': lambda spatial: torch.zeros(2, C, *spatial),
    'constant': lambda spatial: torch.full((2, C, *spatial), 3.0),
    'huge': lambda spatial: 1e4 * torch.randn(2, C, *spatial, generator=_gen(1)),
    'tiny': lambda spatial: 1e-6 * torch.randn(2, C, *spatial, generator=_gen(2)),
    'one_position': lambda spatial: torch.randn(2, C, *[1] * len(spatial), generator=_gen(3)),
}


def _build(variant: str) -> torch.nn.Module:
    name = variant.split('-')[0]
    block = ROOT_MODELS.build(dict(type=name, in_channels=C, **VARIANTS[variant]))
    return randomise_(block, std=0.3, seed=4)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_shape_and_identity_at_init(variant):
    name = variant.split('-')[0]
    block = ROOT_MODELS.build(dict(type=name, in_channels=C, **VARIANTS[variant]))
    for rank in block.spatial_ranks:
        x = torch.randn(2, C, *SPATIAL[rank], generator=_gen(8))
        for training in (True, False):
            y = block.train(training)(x)
            assert y.shape == x.shape
            assert torch.equal(y, x), (rank, training)
    randomise_(block, seed=1)
    x = torch.randn(2, C, *SPATIAL[2], generator=_gen(9))
    assert not torch.equal(block(x), x)
    block.init_weights()
    for training in (True, False):
        assert torch.equal(block.train(training)(x), x), training


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('autocast', [False, True], ids=['fp32', 'bf16'])
@pytest.mark.parametrize('kind', list(INPUTS))
@pytest.mark.parametrize('variant', list(VARIANTS))
def test_finite_output(variant, kind, autocast, training):
    block = _build(variant).train(training)
    for rank in block.spatial_ranks:
        x = INPUTS[kind](SPATIAL[rank])
        if kind == 'one_position' and getattr(block, 'sub_sample', False):
            with pytest.raises(ValueError, match='sub_sample=True max-pools'):
                block(x)
            continue
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            y = block(x)
            a = block.affinity(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all(), f'{variant} on {kind}, rank {rank}: {(~torch.isfinite(y)).sum()} non-finite'
        assert torch.isfinite(a).all(), f'{variant} affinity on {kind}, rank {rank}'


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_bf16_autocast_is_close_to_float32(variant):
    block = _build(variant).eval()
    x = torch.randn(2, C, 5, 6, generator=_gen(5))
    with torch.no_grad():
        y32 = block(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y16 = block(x)
    assert torch.isfinite(y16).all()
    err = rel_err(y16.float() - x, y32 - x)  # the block's contribution, not the residual
    assert err < 5e-2, err


@pytest.mark.parametrize('variant', ['NLBlock', 'NSBlock', 'SNLBlock', 'SNLBlock-order3-factored'])
def test_backward_under_autocast_is_finite(variant):
    block = _build(variant).train()
    x = torch.randn(2, C, 5, 6, generator=_gen(6), requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = block(x)
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in block.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_half_precision_module_keeps_the_dtype(variant):
    """A block converted to bfloat16 (``module.to(torch.bfloat16)``, no autocast) returns bfloat16, and its
    normalisations still run in float32: the result stays close to the float32 computation on the same
    (rounded) weights and input."""
    block = _build(variant).eval().to(torch.bfloat16)
    x = torch.randn(2, C, 5, 6, generator=_gen(7)).to(torch.bfloat16)
    with torch.no_grad():
        expected = copy.deepcopy(block).float()(x.float())
    y = block(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    err = rel_err(y.float() - x.float(), expected - x.float())  # the block's contribution, not the residual
    assert err < 5e-2, err
    y.float().square().mean().backward()
