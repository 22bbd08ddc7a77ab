"""No block stores an ``N x N`` affinity in its forward pass at a large ``N``.

Two measurements of one forward pass (autograd on, train mode) at ``N = 96 * 96 = 9216`` positions, where one
float32 ``N x N`` buffer is 340 MB:

* ``torch.profiler`` memory records: the largest memory any single operator allocates (its children
  included), which bounds every single allocation made inside it;
* the process's peak resident memory over the pass (``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``), which also sees buffers that an operator allocates and frees internally.
"""
import gc

import pytest
import torch

import snl_mm  # noqa: F401 (registers the blocks)
from snl_mm.analysis.benchmark.memory import profile_memory
from snl_mm.registry import ROOT_MODELS

C, H, W = 64, 96, 96
N = H * W

VARIANTS = {
    'SNLBlock': dict(),
    'SNLBlock-order3': dict(order=3),
    'NLBlock': dict(),
    'NLBlock-sub_sample': dict(sub_sample=True),
    'NLBlock-gaussian': dict(mode='gaussian'),
    'NLBlock-dot_product': dict(mode='dot_product'),
    'NSBlock': dict(),
    'GraphNonlocalBlock': dict(graph_filter=dict(order=2, terms=(0, 1), shared_coefficients=(-1, 1))),
    'A2Block': dict(),
    'CGNLBlock': dict(),
    'CCBlock': dict(),
    'GCBlock': dict(),
    'GCBlock-se': dict(pooling_type='avg', fusion_types=('channel_mul', ), norm_cfg=None),
    'DNLBlock': dict(),
    'DNLBlock-dot_product': dict(mode='dot_product'),
    'LinearAttentionBlock': dict(),
    'LinearAttentionBlock-heads8': dict(heads=8),
    'GraphNonlocalBlock-disentangled': dict(affinity=dict(type='disentangled'), graph_filter=dict(order=3)),
    'PAMBlock': dict(),
    'CAMBlock': dict(),
    'EMABlock': dict(),
    'GraphNonlocalBlock-em-symmetric': dict(affinity=dict(type='em', normalize='symmetric'),
                                            graph_filter=dict(order=3)),
    'APNBBlock': dict(),
    'AFNBBlock-concat': dict(fusion='concat'),
    'GraphNonlocalBlock-anchors': dict(affinity=dict(type='pyramid_anchors'), graph_filter=dict(order=3)),
    'ISABlock': dict(),
    'GraphNonlocalBlock-interlaced': dict(affinity=dict(type='interlaced', down_factor=(8, 6)),
                                          graph_filter=dict(order=3)),
}


def _measure(block: torch.nn.Module, x: torch.Tensor):
    """(largest single-operator allocation, peak RSS growth or None) of ``block(x)``, in bytes."""
    block(x[..., :8, :8]).sum().backward()  # first-call set-up (kernels, thread pools) out of the way
    block.zero_grad(set_to_none=True)
    gc.collect()
    out = {}
    prof = profile_memory(lambda: out.update(y=block(x)), rss=True, record_shapes=True)
    assert torch.isfinite(out['y']).all()
    return prof.largest_operator, prof.rss_growth


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_no_n_by_n_buffer_in_forward(variant):
    torch.manual_seed(0)
    name = variant.split('-')[0]
    block = ROOT_MODELS.build(dict(type=name, in_channels=C, **VARIANTS[variant])).train()
    x = torch.randn(1, C, H, W)
    n_keys = N // 4 if VARIANTS[variant].get('sub_sample') else N
    affinity_bytes = N * n_keys * 4
    largest, peak = _measure(block, x)
    assert largest < affinity_bytes, (
        f'{variant}: one operator allocated {largest / 2**20:.1f} MiB; the {N}x{n_keys} float32 affinity is '
        f'{affinity_bytes / 2**20:.1f} MiB')
    if peak is not None:
        assert peak < affinity_bytes, (
            f'{variant}: peak RSS grew by {peak / 2**20:.1f} MiB in one forward; the {N}x{n_keys} '
            f'float32 affinity is {affinity_bytes / 2**20:.1f} MiB')
