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


def test_softmax_attention_in_the_autocast_dtype():
    q, k, z = _rand(2, 30, 4, seed=6), _rand(2, 30, 4, seed=7), _rand(2, 30, 5, seed=8)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast('cpu', dtype=dtype), MatrixDtypes() as calls:
            out = Affinity('exp_dot', False, 'random_walk')(q, k).matmul(z.to(dtype))
        assert [d for _, d in calls.calls] == [dtype] and out.dtype == dtype


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


def test_unbounded_dense_affinity_multiplies_in_float32_under_float16():
    """An unnormalised exponential kernel has entries beyond 65504: under float16 its product stays float32; a
    normalised one (entries in [0, 1]) runs in float16."""
    q, k, z = 3 * _rand(1, 8, 4, seed=15), 3 * _rand(1, 8, 4, seed=16), _rand(1, 8, 3, seed=17)
    unbounded = Affinity('exp_dot', False, 'none', path='dense')(q, k)
    assert unbounded.dense().max() > 65504
    with torch.autocast('cpu', dtype=torch.float16):
        out = unbounded.matmul(z.half())
        bounded = Affinity('exp_dot', True, 'symmetric')(q, k).matmul(z.half())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    ref = unbounded.dense() @ z
    assert ((out - ref).norm() / ref.norm()).item() < 1e-3
    assert bounded.dtype == torch.float16
