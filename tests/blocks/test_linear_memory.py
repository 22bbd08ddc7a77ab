"""A2, CGNL and CC never allocate an ``N x N`` buffer in forward: measured with the profiler's memory records
at ``N = 96 x 96 = 9216`` (an ``N x N`` float32 matrix would be 340 MB). The blocks linear in ``N`` (GC, linear
attention, CAM, EMA, ANN's APNB and AFNB) need at most 2.2 times the extra memory for a forward and backward pass
when ``N`` doubles."""
import pytest
import torch

from snl_mm.analysis.benchmark.cases import excite
from snl_mm.analysis.benchmark.memory import peak_memory_mib, profile_memory
from snl_mm.blocks import (A2Block, AFNBBlock, APNBBlock, CAMBlock, CCBlock, CGNLBlock, EMABlock, GCBlock,
                           LinearAttentionBlock)

C, H, W = 64, 96, 96
N = H * W
DENSE_BYTES = N * N * 4


def largest_allocation(fn) -> int:
    """The largest single CPU allocation (bytes) made while ``fn()`` runs, from the profiler's records."""
    prof = profile_memory(fn)
    assert prof.records, 'the profiler recorded no allocation'
    return prof.largest_allocation


def test_the_measurement_sees_a_dense_matrix():
    """Control: forming one ``n x n`` float32 affinity is recorded as an allocation of ``n^2 * 4`` bytes."""
    n = 2048
    q = torch.randn(1, n, 8)
    assert largest_allocation(lambda: (q @ q.transpose(1, 2)).softmax(-1)) >= n * n * 4


BLOCKS = {
    'A2': lambda: A2Block(C),
    'CGNL-dot': lambda: CGNLBlock(C),
    'CGNL-gaussian-g8': lambda: CGNLBlock(C, groups=8, kernel='gaussian'),
    'CC-R2': lambda: CCBlock(C),
}


@pytest.mark.parametrize('name', sorted(BLOCKS))
def test_forward_allocates_no_n_by_n_buffer(name):
    torch.manual_seed(0)
    block = BLOCKS[name]()
    for m in block.modules():  # a non-trivial block, output not zeroed
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            torch.nn.init.ones_(m.weight)
    if isinstance(block, CCBlock):
        torch.nn.init.constant_(block.gamma.scale, 0.5)
    x = torch.randn(1, C, H, W)
    y = {}

    def forward():
        y['out'] = block(x)

    peak = largest_allocation(forward)
    assert torch.isfinite(y['out']).all() and not torch.equal(y['out'], x)
    # the feature maps themselves (C x N floats = 2.4 MB) bound the largest buffer, far below N x N
    assert peak < DENSE_BYTES / 16, (name, peak, DENSE_BYTES)


#: blocks whose memory is linear in N, as built by the benchmark (zero-initialised layers excited)
LINEAR_BLOCKS = {
    'GC': lambda: GCBlock(C, fusion_types=('channel_add', 'channel_mul')),
    'SE': lambda: GCBlock(C, ratio=1 / 16, pooling_type='avg', fusion_types=('channel_mul', ), norm_cfg=None),
    'LinearAttention': lambda: LinearAttentionBlock(C, heads=2),
    'CAM': lambda: CAMBlock(C),
    'EMA': lambda: EMABlock(C),
    'EMA-full': lambda: EMABlock(C, grad='full'),
    'APNB': lambda: APNBBlock(C),
    'APNB-concat': lambda: APNBBlock(C, fusion='concat'),
    'AFNB': lambda: AFNBBlock(C),
}


@pytest.mark.parametrize('name', sorted(LINEAR_BLOCKS))
def test_extra_memory_grows_linearly_with_n(name):
    """Extra peak memory of one forward and backward pass (train mode) at ``N = 64 x 64`` and ``64 x 128``: the
    second at most 2.2 times the first."""
    torch.manual_seed(0)
    block = LINEAR_BLOCKS[name]().train()
    excite(block)
    peaks = []
    for w in (64, 128):
        x = torch.randn(1, C, 64, w, requires_grad=True)
        grad = torch.randn(1, C, 64, w)
        block(x[..., :8, :8]).sum().backward()  # first-call set-up out of the way
        peaks.append(peak_memory_mib(lambda: block(x).backward(grad), x.device))
    assert peaks[1] <= 2.2 * peaks[0], (name, peaks)
