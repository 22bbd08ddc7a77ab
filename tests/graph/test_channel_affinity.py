"""CGNL's channel-aware affinity: the Taylor feature map reproduces the expanded Gaussian kernel, the
factored product equals the dense matrix, gradients at zero are finite, arguments are checked."""
import math

import pytest
import torch

from snl_mm.graph import ChannelAffinity, taylor_features


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize('order', [1, 2, 3, 5])
def test_taylor_features_give_the_truncated_series(order):
    gamma = 0.3
    a, b = _randn(7, seed=1), _randn(5, seed=2)
    k = taylor_features(a, order, gamma) @ taylor_features(b, order, gamma).T
    series = sum(math.exp(-2 * gamma) * (2 * gamma * a[:, None] * b[None, :]) ** n / math.factorial(n)
                 for n in range(order + 1))
    assert torch.allclose(k, series, rtol=1e-14, atol=0)


def test_taylor_series_converges_to_the_simplified_rbf():
    """``beta exp(2 gamma a b)`` = ``exp(-gamma (a - b)^2)`` with ``exp(-gamma (a^2 + b^2))`` set to
    ``exp(-2 gamma)``: the kernel CGNL's Taylor expansion approximates."""
    gamma = 0.1
    a, b = _randn(6, seed=1), _randn(6, seed=2)
    k = taylor_features(a, 20, gamma) @ taylor_features(b, 20, gamma).T
    rbf = torch.exp(-gamma * (a[:, None] - b[None, :]) ** 2)
    simplified = rbf * torch.exp(gamma * (a[:, None] ** 2 + b[None, :] ** 2 - 2))
    assert torch.allclose(k, simplified, rtol=1e-13, atol=0)


def test_taylor_gradient_is_finite_at_zero():
    x = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    taylor_features(x, 3, 1e-4).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('kernel,use_scale', [('dot', False), ('dot', True), ('gaussian', True)])
def test_factored_product_equals_dense(kernel, use_scale):
    t, p, z = _randn(3, 12, seed=1), _randn(3, 12, seed=2), _randn(3, 12, 1, seed=3)
    affinity = ChannelAffinity(kernel=kernel, order=2, gamma=0.05, use_scale=use_scale)
    op = affinity(t, p)
    s = 1 / math.sqrt(12) if use_scale else 1.0
    if kernel == 'dot':
        m = s * t[:, :, None] * p[:, None, :]
    else:
        m = s * sum(math.exp(-0.1) * 0.1 ** n / math.factorial(n) * (t[:, :, None] * p[:, None, :]) ** n
                    for n in range(3))
    assert op.path == 'factored' and affinity.rank == (1 if kernel == 'dot' else 3)
    assert torch.allclose(op.dense(), m, rtol=1e-14, atol=1e-15)
    assert torch.allclose(op.matmul(z), m @ z, rtol=1e-13, atol=1e-14)


def test_float32_under_autocast():
    t, p = _randn(2, 10, dtype=torch.bfloat16), _randn(2, 10, seed=1, dtype=torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        op = ChannelAffinity(kernel='gaussian')(t, p)
    assert op.p.dtype == op.q.dtype == torch.float32


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"kernel must be one of \('dot', 'gaussian'\)"):
        ChannelAffinity(kernel='exp')
    with pytest.raises(ValueError, match=r'order \(highest Taylor power\) must be an integer >= 1'):
        ChannelAffinity(order=0)
    with pytest.raises(ValueError, match=r'gamma must be a finite number > 0'):
        ChannelAffinity(gamma=-1.0)
    with pytest.raises(ValueError, match=r'one shape \(B, M\)'):
        ChannelAffinity()(_randn(2, 3), _randn(2, 4))
