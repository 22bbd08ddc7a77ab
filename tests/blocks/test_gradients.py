"""Every block of the catalogue, and each of its modes, differentiates correctly: ``torch.autograd.gradcheck`` in
float64: a random projection of the Jacobian with respect to the input and every trainable parameter, in training
and in eval mode, on each rank the block takes, and the whole Jacobian with respect to a 2-D input in training
(random weights and norms, never the identity; 8 channels, the fewest every block takes).

The written-out and fused backward passes (criss-cross attention, the chunked attention, the half-precision
rebalancing) and layout traps (a norm fed a token view whose strides look channels-last, whose backward is wrong on
this CPU build) are what this catches; the block-specific files check the forward against references."""
import pytest
import torch
from torch.func import functional_call

from tests.blocks.variants import VARIANTS, build, generator

CHANNELS = 8

#: variants whose affinity is a constant of the backward by definition: EMANet runs its EM steps without gradient
#: (``grad='none'``, as mmsegmentation), so the true derivative of the output differs from the one autograd is
#: asked for; ``EMABlock-full`` and the EM affinity's own tests check the differentiated form
STOP_GRADIENT = {'EMABlock', 'EMABlock-relu', 'GraphNonlocalBlock-em-symmetric-order3'}

#: a spatial shape per rank, smaller than the suites' (gradcheck runs the block a few times per input)
GRAD_SPATIAL = {1: (5, ), 2: (3, 4), 3: (2, 3, 4)}


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('variant', [v for v in VARIANTS if v not in STOP_GRADIENT])
def test_gradcheck_input_and_parameters(variant, training):
    block = build(variant, in_channels=CHANNELS).double().train(training)
    names = [n for n, p in block.named_parameters() if p.requires_grad]
    params = tuple(p.detach().clone().requires_grad_() for n, p in block.named_parameters() if p.requires_grad)
    # stateful blocks (running statistics, EMA's bases) start every evaluation from the same state
    buffers = {n: b.clone() for n, b in block.named_buffers()}
    for rank in block.spatial_ranks:
        spatial = GRAD_SPATIAL[rank]
        x = torch.randn(2, CHANNELS, *spatial, generator=generator(5), dtype=torch.float64, requires_grad=True)

        def run(x, *values):
            state = dict(zip(names, values), **{n: b.clone() for n, b in buffers.items()})
            return functional_call(block, state, (x, ))

        assert torch.autograd.gradcheck(run, (x, *params), fast_mode=True), (variant, rank)
        if training and rank == 2:  # the whole Jacobian once: the training pass, with batch statistics
            assert torch.autograd.gradcheck(lambda x: run(x, *params), (x, )), (variant, rank)


def test_the_check_sees_a_wrong_backward():
    """Control: a function with a deliberately wrong backward fails the same check."""

    class Wrong(torch.autograd.Function):

        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 3

    x = torch.randn(2, CHANNELS, 3, 4, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.gradcheck(Wrong.apply, (x, ), fast_mode=True, raise_exception=False)
