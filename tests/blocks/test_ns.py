"""NSBlock: the nonlocal stage, ``sum_j a_ij (z_j - z_i) W`` (Appendix B.2), units sharing one affinity."""
import pytest
import torch
from tests.blocks.reference import (conv1x1, ns_reference, randomise_, randomise_norms_, rel_err, softmax_rows,
                                    tokens)

from snl_mm.blocks import NSBlock

SHAPES = {1: (2, 8, 7), 2: (2, 8, 5, 6), 3: (2, 8, 3, 4, 5)}
RANKS = sorted(SHAPES)


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# Exactly zero gradients that the math dictates: softmax_j(theta_i . (phi_j + b)) does not depend on b, and
# (A - I) (Z + 1 b^T) = (A - I) Z because A is row-stochastic, so the phi and g biases get no gradient.
STRUCTURALLY_ZERO = {'phi.bias', 'g.bias', 'units.0.g.bias'}


@pytest.mark.parametrize('rank', RANKS)
def test_gradients_reach_every_parameter(rank):
    block = randomise_norms_(NSBlock(8, num_units=2)).double().eval()
    x = _x(SHAPES[rank])
    (block(x) * _x(SHAPES[rank], seed=2)).sum().backward()
    scale = max(p.grad.abs().max() for p in block.parameters())
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        if name in STRUCTURALLY_ZERO:
            assert p.grad.abs().max() < 1e-12 * scale, name
        else:
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('use_scale', [False, True])
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('rank', RANKS)
def test_matches_appendix_b2_form_float64(rank, training, use_scale):
    block = randomise_(NSBlock(8, use_scale=use_scale)).double().train(training)
    x = _x(SHAPES[rank])
    scale = 4 ** -0.5 if use_scale else 1.0
    y_ref = ns_reference(block, x, training=training, scale=scale)
    err = rel_err(block(x), y_ref)
    assert err < 1e-10, err


class _Stage(torch.nn.Module):
    """Some units of an NS block over its theta / phi: one unit = a stage that recomputes A."""

    def __init__(self, block, units):
        super().__init__()
        self.theta, self.phi = block.theta, block.phi
        first, *rest = units
        self.g, self.w, self.norm, self.act = first.g, first.w, first.norm, first.act
        self.units = torch.nn.ModuleList(rest)


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('rank', RANKS)
def test_two_units_share_the_stage_input_affinity(rank, training):
    block = randomise_(NSBlock(8, num_units=2), seed=3).double().train(training)
    x = _x(SHAPES[rank])
    y = block(x)
    err = rel_err(y, ns_reference(block, x, training=training))
    assert err < 1e-10, err
    # recomputing A from the first unit's output is a different block: the test tells them apart
    mid = ns_reference(_Stage(block, [block]), x, training=training)
    recomputed = ns_reference(_Stage(block, [block.units[0]]), mid, training=training)
    assert rel_err(y, recomputed) > 1e-3


def test_affinity_is_the_row_softmax():
    block = randomise_(NSBlock(8)).double()
    x = _x(SHAPES[2])
    xf = x.reshape(2, 8, -1)
    a = block.affinity(x)
    a_ref = softmax_rows(tokens(conv1x1(xf, block.theta)) @ conv1x1(xf, block.phi))
    assert rel_err(a, a_ref) < 1e-12
    assert torch.allclose(a.sum(-1), torch.ones(2, 30, dtype=a.dtype))


def test_checkpoint_keys():
    keys = set(NSBlock(8, num_units=2).state_dict())
    norm = {'norm.weight', 'norm.bias', 'norm.running_mean', 'norm.running_var', 'norm.num_batches_tracked'}
    unit = {'g.weight', 'g.bias', 'w.weight', 'w.bias'} | norm
    assert keys == ({'theta.weight', 'theta.bias', 'phi.weight', 'phi.bias'} | unit
                    | {f'units.0.{k}' for k in unit})


def test_bad_arguments():
    with pytest.raises(ValueError, match=r'num_units must be an integer >= 1'):
        NSBlock(8, num_units=0)
    with pytest.raises(ValueError, match=r'in_channels=8 is not divisible by reduction=3.*valid'):
        NSBlock(8, reduction=3)
