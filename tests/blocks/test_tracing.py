"""Every block of the catalogue under the tracers: ``torch.compile(fullgraph=True)`` with no graph break, forward
and backward equal to eager; ``torch.fx.symbolic_trace`` once, then run on every rank, in train and eval mode
and under autocast, equal to eager.

The compile suite runs dynamo and AOTAutograd (``backend='aot_eager'``): graph breaks, the traced forward and
the derived backward are theirs; inductor's code generation adds minutes per block on two CPU cores and is
exercised by ``tools/analysis/check_deploy.py``.
"""
import copy

import pytest
import torch

from tests.blocks.variants import BLOCKS, C, SPATIAL, VARIANTS, build, generator
from tests.helpers import rel_err


def _grads(block: torch.nn.Module, x: torch.Tensor, forward) -> dict:
    """Output, input gradient and parameter gradients (as one vector: some are zero up to rounding, e.g. a key
    bias under a softmax) of ``sum(forward(x) * w)`` for a fixed random ``w``."""
    x = x.detach().clone().requires_grad_()
    block.zero_grad(set_to_none=False)
    y = forward(x)
    (y * torch.randn(y.shape, generator=generator(21))).sum().backward()
    params = torch.cat([p.grad.flatten() for p in block.parameters() if p.requires_grad])
    return {'output': y.detach(), 'input grad': x.grad, 'parameter grads': params}


@pytest.mark.parametrize('name', BLOCKS)
def test_compile_fullgraph_forward_and_backward(name):
    block = build(name).train()
    x = torch.randn(2, C, *SPATIAL[2], generator=generator(20))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(block)(x.clone().requires_grad_())
    assert explanation.graph_break_count == 0, [str(r.reason) for r in explanation.break_reasons]
    assert explanation.graph_count == 1
    compiled = torch.compile(block, fullgraph=True, backend='aot_eager')
    state = copy.deepcopy(block.state_dict())  # a stateful block (EMA's bases) starts both calls from one state
    eager = _grads(block, x, block)
    block.load_state_dict(state)
    traced = _grads(block, x, compiled)
    for key, value in eager.items():
        assert rel_err(traced[key], value) < 1e-5, (key, rel_err(traced[key], value))
    torch._dynamo.reset()


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_fx_symbolic_trace(variant):
    """One trace serves every rank, both modes and autocast: the graph's shape-dependent arithmetic runs in the
    recorded calls of the operators' functions (``torch.fx.wrap``)."""
    block = build(variant)
    traced = torch.fx.symbolic_trace(block)
    assert isinstance(traced, torch.fx.GraphModule)
    for rank in block.spatial_ranks:
        x = torch.randn(2, C, *SPATIAL[rank], generator=generator(22))
        for training in (False, True):
            block.train(training), traced.train(training)
            state = copy.deepcopy(block.state_dict())  # both calls from one state (EMA's bases move in training)
            with torch.no_grad():
                y = traced(x)
                block.load_state_dict(state)
                assert torch.equal(y, block(x)), (rank, training)
        block.eval(), traced.eval()
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            assert torch.equal(traced(x), block(x)), rank
