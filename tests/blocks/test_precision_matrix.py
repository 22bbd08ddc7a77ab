"""The precision matrix: every block and every variant of the catalogue (``tests/blocks/variants.py``) in float32,
under bfloat16 and float16 autocast and as a bfloat16 and a float16 module, in eval mode and in training, each with
a backward, on the inputs real data produces: random, all zero, constant (0.5, 1, 3: a blank region, a black
frame), all negative (every ReLU factor zero), one position, ``H = 1``, ``W = 1`` (deep stages of small images,
strips), and one NaN pixel in one sample.

Every run checks a finite output in the input's dtype (a half-precision module returns its own dtype) and finite
gradients of the input and of every parameter. With the NaN pixel, the other sample's output and input gradient
stay finite (in eval mode, and in training where no norm takes batch statistics: BatchNorm in training mixes the
samples by design). A block may refuse a map it cannot take with the ``ValueError`` of its input check
(``sub_sample`` needs ``H, W >= 2``); a refusal of an ordinary map is a failure.

One test per (variant, precision, mode) runs all the inputs on ``(2, 16, 5, 6)``-sized maps and reports every
input that fails, so that the matrix stays fast as the catalogue grows. The two cases that first failed are named
tests below the matrix.
"""
import copy
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from snl_mm.blocks import NLBlock, SNLBlock
from tests.blocks.variants import C, VARIANTS, build, generator
from tests.helpers import randomise_, rel_err

#: ``(autocast dtype, module dtype)`` of each precision
PRECISIONS: Dict[str, Tuple[Optional[torch.dtype], Optional[torch.dtype]]] = {
    'fp32': (None, None),
    'autocast-bf16': (torch.bfloat16, None),
    'autocast-fp16': (torch.float16, None),
    'bf16': (None, torch.bfloat16),
    'fp16': (None, torch.float16),
}

#: the spatial shape of the ordinary inputs; the degenerate ones are given with their inputs
SPATIAL = (5, 6)
#: inputs whose shape a block may refuse by its input check
DEGENERATE_SHAPES = ('one_position', 'H=1', 'W=1')


def _randn(*spatial: int, seed: int) -> Tensor:
    return torch.randn(2, C, *spatial, generator=generator(seed))


def _nan_pixel() -> Tensor:
    x = _randn(*SPATIAL, seed=21)
    x[1, 3, 2, 4] = float('nan')
    return x


#: name -> a float32 input ``(2, C, H, W)``
INPUTS: Dict[str, Callable[[], Tensor]] = {
    'random': lambda: _randn(*SPATIAL, seed=20),
    'zeros': lambda: torch.zeros(2, C, *SPATIAL),
    'constant-0.5': lambda: torch.full((2, C, *SPATIAL), 0.5),
    'constant-1': lambda: torch.full((2, C, *SPATIAL), 1.0),
    'constant-3': lambda: torch.full((2, C, *SPATIAL), 3.0),
    'negative': lambda: -(_randn(*SPATIAL, seed=22).abs() + 0.1),
    'one_position': lambda: _randn(1, 1, seed=23),
    'H=1': lambda: _randn(1, SPATIAL[1], seed=24),
    'W=1': lambda: _randn(SPATIAL[0], 1, seed=25),
    'nan_pixel': _nan_pixel,
}


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """The matrix runs thousands of forwards and backwards on tiny maps: on one thread, where the intra-op pool's
    hand-offs would cost more than the kernels (and stall while other processes hold the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mixes_samples(block: torch.nn.Module) -> bool:
    """Whether a norm of ``block`` normalises with batch statistics (BatchNorm in training): such a norm carries a
    NaN of one sample into every other by design."""
    return any(isinstance(m, _BatchNorm) and m.training for m in block.modules())


def run(block: torch.nn.Module, x: Tensor, autocast: Optional[torch.dtype]) -> Tuple[Tensor, Tensor]:
    """``block(x)`` (under ``autocast`` when given) and the gradient of ``x`` for a loss that is a mean over the
    output, as training losses are (a fixed random weight per element, so that no gradient cancels by symmetry);
    the parameters' gradients are left in ``.grad``.

    The mean keeps the gradients at the scale a loss gives them. A gradient that is large in exact arithmetic is
    brought into float16's range by a ``GradScaler`` lowering its scale (BatchNorm in training multiplies it by
    ``1 / sqrt(eps)``, 316, on a constant map); a NaN made by the block does not scale, and fails here at any
    scale."""
    x = x.detach().requires_grad_()
    block.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        y = block(x)
    weight = torch.randn(y.shape, generator=generator(30))
    (y.float() * weight).mean().backward()
    return y, x.grad


def check(block: torch.nn.Module, name: str, x: Tensor, autocast: Optional[torch.dtype]) -> List[str]:
    """The failures of one input (empty when it passes)."""
    try:
        block.check_input(x)
    except ValueError as err:
        return [] if name in DEGENERATE_SHAPES else [f'refused an ordinary map: {err}']
    y, grad = run(block, x, autocast)
    problems = []
    # a half-precision module returns its dtype; under autocast a block may end in a layer autocast runs in its
    # dtype (a fusion convolution without a residual)
    if y.shape != x.shape or y.dtype not in (x.dtype, autocast):
        problems.append(f'output {tuple(y.shape)} {y.dtype} for input {tuple(x.shape)} {x.dtype}')
    if name == 'nan_pixel':
        if not mixes_samples(block):
            if not torch.isfinite(y[0]).all():
                problems.append('a NaN in sample 1 reached the output of sample 0')
            if not torch.isfinite(grad[0]).all():
                problems.append('a NaN in sample 1 reached the input gradient of sample 0')
        return problems
    if not torch.isfinite(y).all():
        problems.append(f'{(~torch.isfinite(y)).sum().item()} non-finite outputs')
    if grad.dtype != x.dtype or not torch.isfinite(grad).all():
        problems.append(f'input gradient {grad.dtype}, {(~torch.isfinite(grad)).sum().item()} non-finite')
    for pname, p in block.named_parameters():
        if not p.requires_grad:  # frozen by the block (EMA's projection)
            continue
        if p.grad is None:
            problems.append(f'no gradient for {pname}')
        elif not torch.isfinite(p.grad).all():
            problems.append(f'non-finite gradient of {pname}')
    return problems


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('precision', list(PRECISIONS))
@pytest.mark.parametrize('variant', list(VARIANTS))
def test_precision_matrix(variant, precision, training):
    autocast, module_dtype = PRECISIONS[precision]
    block = build(variant)
    if 2 not in block.spatial_ranks:
        pytest.skip(f'{variant} takes ranks {block.spatial_ranks}, the matrix runs (B, C, H, W) maps')
    block = block.to(module_dtype or torch.float32).train(training)
    state = copy.deepcopy(block.state_dict())
    failures = {}
    for name, make in INPUTS.items():
        block.load_state_dict(state)  # training forwards move the running statistics
        problems = check(block, name, make().to(module_dtype or torch.float32), autocast)
        if problems:
            failures[name] = problems
    assert not failures, f'{variant}, {precision}, {"train" if training else "eval"}: {failures}'


# -- the two cases that first failed -------------------------------------------------------------------------------


@pytest.mark.parametrize('path', ['auto', 'dense', 'factored'])
@pytest.mark.parametrize('half', ['autocast', 'module'])
def test_snl_float16_backward_on_a_constant_map(path, half):
    """SNL as built (default init, output norm weight 1 as after some training), training on a constant map under
    float16 autocast or as a float16 module: finite gradients of every parameter and of the input, the output
    close to float32's. On such a map ReLU zeroes whole columns of the factors (a channel negative at one position
    is negative at all), and the exponent of the float16 rebalancing (``log2`` of a column norm, zero there) used
    to backpropagate ``0 / 0`` into ``theta``, ``phi`` and the input. (The gradients themselves are float16
    rounding noise that BatchNorm, at zero variance, multiplies by ``1 / sqrt(eps)``: the float32 ones are
    ~1e-8, so only their finiteness is compared.)"""
    block = SNLBlock(64, path=path)
    with torch.no_grad():
        block.norm.weight.fill_(1.0)
    x = torch.full((2, 64, 14, 14), 1.0)
    y32, _ = run(copy.deepcopy(block).train(), x, None)
    block = block.train() if half == 'autocast' else block.half().train()
    y, grad = run(block, x if half == 'autocast' else x.half(), torch.float16 if half == 'autocast' else None)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    assert rel_err(y.float(), y32) < 1e-3
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('spatial', [(1, 1), (1, 6), (5, 1)], ids=['one_position', 'H=1', 'W=1'])
def test_nl_dot_product_float16_module_on_thin_maps(spatial, training):
    """NL's dot product as a float16 module on a map of one position, one row or one column: the cost model
    takes the dense order there, whose unnormalised affinity multiplies in float32 under float16; its result
    used to reach the float16 output convolution in float32. It returns float16, close to the float32 module on
    the same weights."""
    block = randomise_(NLBlock(C, mode='dot_product'), std=0.3, seed=4).train(training)
    x = torch.randn(2, C, *spatial, generator=generator(26)).half()
    reference = copy.deepcopy(block).float()
    block = block.half()
    y, grad = run(block, x, None)
    y32, grad32 = run(reference, x.float(), None)
    assert y.dtype == grad.dtype == torch.float16
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    assert rel_err(y.float() - x.float(), y32 - x.float()) < 1e-2
    assert rel_err(grad.float(), grad32) < 1e-2
