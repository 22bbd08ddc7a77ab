"""The precision policy (:mod:`snl_mm.graph.precision`): which products run in half precision under autocast and
which sums stay float32, read off the dtypes the operators hand to the matrix kernels; float16 products that
would overflow without the power-of-two rebalancing; the rebalancing is exact."""
from typing import List, Tuple

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from snl_mm.graph import Affinity, ChannelAffinity, double_attention
from snl_mm.graph.precision import balance_columns, compute_dtype, power_of_two_exponent

MATRIX_OPS = {'bmm', 'baddbmm', 'mm', 'addmm', '_scaled_dot_product_flash_attention_for_cpu',
              '_scaled_dot_product_flash_attention', '_scaled_dot_product_efficient_attention'}


class MatrixDtypes(TorchDispatchMode):
    """Records ``(op, dtype of the first input)`` of every matrix kernel that runs inside it."""

    def __init__(self):
        super().__init__()
        self.calls: List[Tuple[str, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in MATRIX_OPS:
            self.calls.append((name, args[0].dtype))
        return func(*args, **(kwargs or {}))


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_compute_dtype():
    x = _rand(2, 3)
    assert compute_dtype(x) == torch.float32 and compute_dtype(x.bfloat16()) == torch.bfloat16
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert compute_dtype(x) == compute_dtype(x.half()) == torch.bfloat16
        assert compute_dtype(x.double()) == torch.float64  # autocast leaves float64 alone
    with torch.autocast('cpu', dtype=torch.float16):
        assert compute_dtype(x) == torch.float16


def test_balance_columns_is_exact_and_bounds_the_sums():
    inner = _rand(2, 50, 3, seed=1).abs() * torch.tensor([1e-3, 1.0, 1e4])
    outer = _rand(2, 40, 3, seed=2)
    inner[1, 7, 0] = float('nan')  # a broken sample keeps its own values
    b_inner, b_outer = balance_columns(inner, outer)
    assert torch.equal(b_outer[0] @ b_inner[0].T, outer[0] @ inner[0].T)  # powers of two: the same products
    norms = b_inner[0].abs().sum(0)
    assert (norms <= 1).all() and (norms > 0.5).all()
    assert torch.equal(b_inner[1, :, 1:], inner[1, :, 1:] / 2 ** power_of_two_exponent(inner[1, :, 1:].abs().sum(0)))
    assert torch.isnan(b_inner[1, 7, 0]) and torch.equal(b_outer[1, :, 0], outer[1, :, 0])
    assert torch.equal(power_of_two_exponent(torch.tensor([0.0, 3.0, float('inf'), float('nan')])),
                       torch.tensor([0.0, 2.0, 0.0, 0.0]))


@pytest.mark.parametrize('path', ['dense', 'factored'])
def test_low_rank_products_in_bfloat16_degrees_in_float32(path):
    """SNL's affinity under bfloat16 autocast: the degrees (``P (Q^T 1)``, row sums of ``M``) in float32, the
    products with the signal in bfloat16."""
    q, k, z = _rand(2, 30, 4, seed=3), _rand(2, 30, 4, seed=4), _rand(2, 30, 5, seed=5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with MatrixDtypes() as factors:
            op = Affinity('relu_dot', True, 'symmetric', path=path)(q.bfloat16(), k.bfloat16())
        with MatrixDtypes() as products:
            out = op.matmul(z.bfloat16())
    assert factors.calls and all(dtype == torch.float32 for _, dtype in factors.calls), factors.calls
    assert products.calls and all(dtype == torch.bfloat16 for _, dtype in products.calls), products.calls
    assert out.dtype == torch.bfloat16
    ref = Affinity('relu_dot', True, 'symmetric', path=path)(q, k).matmul(z)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2


@pytest.mark.parametrize('value_channels', [4, 5], ids=['fused', 'narrow-keys'])
def test_softmax_attention_in_the_autocast_dtype(value_channels):
    """Fused attention runs in the autocast dtype (its kernel accumulates in float32). Keys narrower than the
    values run over query chunks on the CPU: their logits (they feed an exponential) in float32, the product of the
    softmax with the values in the autocast dtype."""
    q, k, z = _rand(2, 30, 4, seed=6), _rand(2, 30, 4, seed=7), _rand(2, 30, value_channels, seed=8)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast('cpu', dtype=dtype), MatrixDtypes() as calls:
            out = Affinity('exp_dot', False, 'random_walk')(q, k).matmul(z.to(dtype))
        expected = [dtype] if value_channels == 4 else [torch.float32, dtype] * 2  # one chunk per sample
        assert [d for _, d in calls.calls] == expected and out.dtype == dtype


def test_kernels_that_stay_float32():
    """Logits that feed an exponential (the dense exponential kernel) and CGNL's kernel sums stay float32; A2's
    softmaxes too, while A2's products (distributions times the signal) run in bfloat16."""
    q, k, z = _rand(2, 12, 4, seed=9), _rand(2, 12, 4, seed=10), _rand(2, 12, 3, seed=11)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with MatrixDtypes() as logits:
            op = Affinity('exp_dot', True, 'symmetric')(q, k)
        with MatrixDtypes() as product:
            op.matmul(z.bfloat16())
        with MatrixDtypes() as cgnl:
            ChannelAffinity('gaussian')(q.flatten(1), k.flatten(1)).matmul(z[..., :1].repeat(1, 4, 1).bfloat16())
        a2 = double_attention(q, k)
        with MatrixDtypes() as a2_products:
            out = a2.matmul(z.bfloat16())
    assert [d for _, d in logits.calls] == [torch.float32]
    assert [d for _, d in product.calls] == [torch.bfloat16]
    assert cgnl.calls and all(d == torch.float32 for _, d in cgnl.calls)
    assert a2.p.dtype == a2.q.dtype == torch.float32
    assert a2_products.calls and all(d == torch.bfloat16 for _, d in a2_products.calls) and out.dtype == torch.bfloat16


@pytest.mark.parametrize('normalize', ['symmetric', 'none'])
def test_float16_products_that_would_overflow_unbalanced(normalize):
    """``Q^T z`` sums 4096 positions of signals in the thousands: beyond float16's 65504 for the unbalanced
    factors (the unnormalised kernel; the symmetric normalisation's ``D^-1/2 Q``, whose columns sum to ~sqrt(N)).
    Rebalanced, the float16 products give the float32 result, of which they are a rearrangement."""
    n = 4096
    q, k = _rand(1, n, 4, seed=12).abs() + 0.5, _rand(1, n, 4, seed=13).abs() + 0.5
    z = 2000 * (_rand(1, n, 6, seed=14).abs() + 1)
    symmetrize = normalize == 'symmetric'
    if not symmetrize:
        q = 1e-4 * q  # small queries: the output fits float16, the sums over N do not
    op = Affinity('relu_dot', symmetrize, normalize, path='factored')(q, k)
    ref = op.matmul(z)
    unbalanced = op.right * k if symmetrize else k
    naive = torch.bmm(z.half().transpose(1, 2), unbalanced.half())
    assert not torch.isfinite(naive).all()  # what the rebalancing prevents
    with torch.autocast('cpu', dtype=torch.float16), MatrixDtypes() as calls:
        out = op.matmul(z.half())
    assert calls.calls and all(d == torch.float16 for _, d in calls.calls)
    assert torch.isfinite(out).all()
    assert ((out.float() - ref).norm() / ref.norm()).item() < 5e-3


@pytest.mark.parametrize('kernel', ['exp_dot', 'dot'])
def test_unbounded_dense_affinity_multiplies_in_float32_under_float16(kernel):
    """An unnormalised kernel has entries beyond 65504: under float16 its dense product runs in float32 and the
    result, which fits, comes back in float16 (the dtype of the layers after it); a normalised one (entries in
    [0, 1]) multiplies in float16."""
    q, k = 2 * _rand(1, 8, 4, seed=15), 2 * _rand(1, 8, 4, seed=16)
    if kernel == 'dot':
        q = 1e4 * q
    unbounded = Affinity(kernel, False, 'none', path='dense')(q, k)
    matrix = unbounded.dense()
    assert matrix.abs().max() > 65504
    # |A z| at most 1e4: the result fits float16, the affinity's entries do not
    z = (_rand(1, 8, 3, seed=17).abs().clamp(max=1.0) + 0.5) * (1e4 / (1.5 * matrix.abs().sum(-1).max()))
    z = z.half().float()
    ref = matrix @ z
    with torch.autocast('cpu', dtype=torch.float16):
        with MatrixDtypes() as calls:
            out = unbounded.matmul(z.half())
        bounded = Affinity('exp_dot', True, 'symmetric')(q, k).matmul(z.half())
    assert [d for _, d in calls.calls] == [torch.float32], calls.calls
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-3
    assert bounded.dtype == torch.float16


def test_rebalancing_is_a_constant_of_autograd():
    """The power-of-two exponents of the rebalancing carry no gradient: a rank column that ReLU zeroes at every
    position (a constant or all-negative map) has a zero L1 norm, where ``log2``'s backward is ``0 / 0``. The
    gradients are the exact powers of two, finite for every column."""
    inner = torch.relu(_rand(2, 30, 3, seed=18)) * torch.tensor([1.0, 0.0, 1e3])
    inner.requires_grad_()
    outer = _rand(2, 20, 3, seed=19).requires_grad_()
    b_inner, b_outer = balance_columns(inner, outer)
    (b_inner.sum() + b_outer.sum()).backward()
    exponent = power_of_two_exponent(inner.detach().abs().sum(dim=1, keepdim=True))
    assert torch.equal(inner.grad, torch.pow(2.0, -exponent).expand_as(inner))
    assert torch.equal(outer.grad, torch.pow(2.0, exponent).expand_as(outer))


#: the operators of the affinities, on queries and keys of one dtype (as the 1x1 convolutions hand them over)
OPERATORS = {
    'relu_dot-symmetric-dense': lambda q, k: Affinity('relu_dot', True, 'symmetric', path='dense')(q, k),
    'relu_dot-symmetric-factored': lambda q, k: Affinity('relu_dot', True, 'symmetric', path='factored')(q, k),
    'dot-size-dense': lambda q, k: Affinity('dot', False, 'size', path='dense')(q, k),
    'dot-size-factored': lambda q, k: Affinity('dot', False, 'size', path='factored')(q, k),
    'exp_dot-random_walk': lambda q, k: Affinity('exp_dot', False, 'random_walk')(q, k),
    'exp_dot-symmetric': lambda q, k: Affinity('exp_dot', True, 'symmetric')(q, k),
    'exp_dot-none-dense': lambda q, k: Affinity('exp_dot', False, 'none', path='dense')(q, k),
    'double_attention': double_attention,
}
#: ``(autocast dtype, tensor dtype)``
HALF_PRECISIONS = {'autocast-bf16': (torch.bfloat16, torch.bfloat16), 'autocast-fp16': (torch.float16, torch.float16),
                   'bf16': (None, torch.bfloat16), 'fp16': (None, torch.float16)}


@pytest.mark.parametrize('precision', list(HALF_PRECISIONS))
@pytest.mark.parametrize('operator', list(OPERATORS))
def test_operators_return_the_compute_dtype(operator, precision):
    """Every operator returns ``A z`` in the compute dtype, whatever dtype its products ran in: a float32 result
    would reach the float16 convolution after it in a float16 module. CGNL's operator, kept out of half precision
    altogether, returns float32 (its block brings the result into range)."""
    autocast, dtype = HALF_PRECISIONS[precision]
    q, k, z = (_rand(2, 6, 4, seed=s).to(dtype) for s in (20, 21, 22))
    with torch.autocast('cpu', dtype=autocast or torch.float16, enabled=autocast is not None):
        out = OPERATORS[operator](q, k).matmul(z)
        cgnl = ChannelAffinity('gaussian')(q.flatten(1), k.flatten(1)).matmul(z[..., :1].repeat(1, 4, 1))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert cgnl.dtype == torch.float32
