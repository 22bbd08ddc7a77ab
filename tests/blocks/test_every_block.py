"""What every block of the catalogue (and each of its modes that changes the numerics) guarantees, on every rank
it takes: the shape is kept and a freshly built block, or one whose ``init_weights`` ran again, is the identity;
no NaN or Inf in the output or the affinity on degenerate, huge and tiny inputs or a one-position map, in float32
and under bfloat16 and float16 autocast, with random weights and norms; half precision close to float32 on
ordinary and on realistic activations; in eval mode no sample changes another's output; a half-precision module
keeps its dtype. Backward passes in every precision, on degenerate maps, are the precision matrix's
(``test_precision_matrix.py``)."""
import copy
import math

import pytest
import torch

from tests.blocks.variants import C, NOT_IDENTITY, SPATIAL, VARIANTS, build, generator
from tests.helpers import randomise_, rel_err

#: the devices the autocast suites run on (CUDA where this machine has one)
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
AUTOCAST = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}

#: the largest value float16 layers are asked to carry (half of float16's 65504)
FLOAT16_CARRY = 2.0**15


def carried(block: torch.nn.Module, x: torch.Tensor) -> float:
    """The largest magnitude ``block`` (eval mode, float32) asks a float16 layer to hold on ``x``: the outputs of
    its input layers (every module called on ``x`` itself or a view of it: the projections, with their norms and
    activations), which depend on the input and the weights alone, and its contribution ``block(x) - x``, which
    its output layers hold. The layers between them see the graph's results, which the precision policy keeps in
    range (CGNL's output convolution runs on its input divided by a power of two under float16)."""
    storage = x.untyped_storage().data_ptr()
    largest = [0.0]

    def record(module, inputs, output):
        reads_x = inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].untyped_storage().data_ptr() == storage
        if reads_x and isinstance(output, torch.Tensor) and output.is_floating_point():
            largest[0] = max(largest[0], output.detach().abs().max().item())

    hooks = [m.register_forward_hook(record) for m in block.modules() if m is not block]
    try:
        with torch.no_grad():
            contribution = (block(x) - x).abs().max().item()
    finally:
        for hook in hooks:
            hook.remove()
    return max(largest[0], contribution)


def huge(block: torch.nn.Module, spatial, dtype) -> torch.Tensor:
    """``10^k randn``, ``k = 4`` in float32 and bfloat16 (whose range is float32's). Float16 cannot hold a layer's
    output beyond 65504 whatever the block does, so there ``k`` is the largest (at most 4) at which what the float32
    block (in eval mode, as built) asks its float16 layers to hold (:func:`carried`) fits :data:`FLOAT16_CARRY`.
    The graph's own sums (logits, degrees, CGNL's kernel sums over ``c N`` nodes) still pass float16's range
    there, and must be held by the precision policy."""
    x = torch.randn(2, C, *spatial, generator=generator(1))
    if dtype != torch.float16:
        return 1e4 * x
    scale = next(s for s in (1e4, 1e3, 1e2, 1e1, 1.0) if carried(block, s * x) < FLOAT16_CARRY)
    assert scale >= 10, 'no input above 10 fits float16'
    return scale * x


INPUTS = {
    'zeros': lambda block, spatial, dtype: torch.zeros(2, C, *spatial),
    'constant': lambda block, spatial, dtype: torch.full((2, C, *spatial), 3.0),
    'huge': huge,
    'tiny': lambda block, spatial, dtype: 1e-6 * torch.randn(2, C, *spatial, generator=generator(2)),
    'one_position': lambda block, spatial, dtype: torch.randn(2, C, *[1] * len(spatial), generator=generator(3)),
}


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_shape_and_identity_at_init(variant):
    block = build(variant, std=None)
    for rank in block.spatial_ranks:
        x = torch.randn(2, C, *SPATIAL[rank], generator=generator(8))
        for training in (True, False):
            y = block.train(training)(x)
            assert y.shape == x.shape
            assert torch.equal(y, x) != (variant in NOT_IDENTITY), (rank, training)
    if variant in NOT_IDENTITY:
        return
    randomise_(block, seed=1)
    x = torch.randn(2, C, *SPATIAL[2], generator=generator(9))
    assert not torch.equal(block(x), x)
    block.init_weights()
    for training in (True, False):
        assert torch.equal(block.train(training)(x), x), training


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('autocast', list(AUTOCAST))
@pytest.mark.parametrize('kind', list(INPUTS))
@pytest.mark.parametrize('variant', list(VARIANTS))
def test_finite_output(variant, kind, autocast, training):
    block = build(variant).train(training)
    as_built = copy.deepcopy(block).eval()  # train-mode forwards move the running statistics
    dtype = AUTOCAST[autocast]
    for rank in block.spatial_ranks:
        x = INPUTS[kind](as_built, SPATIAL[rank], dtype)
        if kind == 'one_position' and getattr(block, 'sub_sample', False):
            with pytest.raises(ValueError, match='sub_sample=True max-pools'):
                block(x)
            continue
        with torch.no_grad(), torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            y = block(x)
            a = block.affinity(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all(), f'{variant} on {kind}, rank {rank}: {(~torch.isfinite(y)).sum()} non-finite'
        assert torch.isfinite(a).all(), f'{variant} affinity on {kind}, rank {rank}'


#: blocks whose contribution passes through more autocast layers in a row than the 1e-2 bound allows for: ISA's
#: two relations are six 1x1 ConvModules deep (mmsegmentation's relations show the same error under autocast)
BF16_BOUNDS = {'ISABlock': 2.5e-2}


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_bf16_autocast_is_close_to_float32(variant):
    """The block's contribution (output minus input) under bfloat16 autocast within 1e-2 of float32 (deeper blocks:
    :data:`BF16_BOUNDS`)."""
    block = build(variant).eval()
    x = torch.randn(2, C, 5, 6, generator=generator(5))
    with torch.no_grad():
        y32 = block(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y16 = block(x)
    assert torch.isfinite(y16).all()
    err = rel_err(y16.float() - x, y32 - x)  # the block's contribution, not the residual
    assert err < BF16_BOUNDS.get(variant.split('-')[0], 1e-2), err


def _realistic(variant: str, channels: int = 64) -> torch.nn.Module:
    """Weights at ``1 / sqrt(fan_in)`` (PyTorch's and mmcv's scale for convolutions), random norms."""
    block = build(variant, in_channels=channels, std=1.0, seed=11)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.modules.conv._ConvNd):
                m.weight.mul_(1 / math.sqrt(m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.mul_(0.1)
    return block.eval()


#: bounds on the relative error of the block's contribution at realistic activations: bfloat16 rounds the
#: projections to 8 bits, so attention with unscaled logits of ~50 (NS, CC) moves by a few percent
REALISTIC_BOUNDS = {torch.bfloat16: 5e-2, torch.float16: 1e-2}


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('variant', list(VARIANTS))
def test_realistic_activations_under_autocast(variant, device):
    """ReLU activations of a trained-looking network (``relu(randn) * 4``, 64 channels, 14 x 14): under float16
    and bfloat16 autocast the output is finite and close to float32."""
    block = _realistic(variant).to(device)
    x = torch.relu(torch.randn(2, 64, 14, 14, generator=generator(12))).mul(4).to(device)
    with torch.no_grad():
        y32 = block(x)
        for dtype, bound in REALISTIC_BOUNDS.items():
            with torch.autocast(device, dtype=dtype):
                y = block(x)
            assert torch.isfinite(y).all(), (variant, dtype)
            err = rel_err(y.float() - x, y32 - x)
            assert err < bound, (variant, dtype, err)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_samples_are_independent_in_eval_mode(variant):
    """A batch with a NaN in one sample and another sample 1e4 times larger: every other sample's output is
    what it is alone, and the large sample's too."""
    block = build(variant).eval()
    for rank in block.spatial_ranks:
        spatial = SPATIAL[rank]
        x = torch.randn(3, C, *spatial, generator=generator(13))
        x[1].view(-1)[5] = float('nan')
        x[2] *= 1e4
        with torch.no_grad():
            y = block(x)
            alone = [block(x[i:i + 1]) for i in (0, 2)]
        assert torch.isnan(y[1]).any() and torch.isfinite(y[0]).all() and torch.isfinite(y[2]).all()
        assert rel_err(y[0] - x[0], alone[0][0] - x[0]) < 1e-5, rank
        assert rel_err(y[2] - x[2], alone[1][0] - x[2]) < 1e-5, rank


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_half_precision_module_keeps_the_dtype(variant, dtype):
    """A block converted to half precision (``module.to(dtype)``, no autocast) returns that dtype, and its
    normalisations still run in float32: the result stays close to the float32 computation on the same
    (rounded) weights and input."""
    block = build(variant).eval().to(dtype)
    x = torch.randn(2, C, 5, 6, generator=generator(7)).to(dtype)
    with torch.no_grad():
        expected = copy.deepcopy(block).float()(x.float())
    y = block(x)
    assert y.dtype == dtype and torch.isfinite(y).all()
    err = rel_err(y.float() - x.float(), expected - x.float())  # the block's contribution, not the residual
    # y itself is rounded to the dtype: half an ulp of each |y| is beyond any block (it dominates where the block
    # adds little to its input, e.g. a small learned gain)
    rounding = ((expected.abs() * torch.finfo(dtype).eps / 2).norm() / (expected - x.float()).norm()).item()
    assert err < (5e-2 if dtype == torch.bfloat16 else 1e-2) + rounding, (err, rounding)
    y.float().square().mean().backward()
