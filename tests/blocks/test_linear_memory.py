"""A2, CGNL and CC never allocate an ``N x N`` buffer in forward: measured with the profiler's memory records
at ``N = 96 x 96 = 9216`` (an ``N x N`` float32 matrix would be 340 MB)."""
import pytest
import torch

from snl_mm.analysis.benchmark.memory import profile_memory
from snl_mm.blocks import A2Block, CCBlock, CGNLBlock

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
