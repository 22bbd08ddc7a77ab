"""Chebyshev graph filters (paper Eq. 3-4): the recurrence, the filter specs of the blocks, validation."""
import math

import pytest
import torch

from snl_mm.graph import FilterSpec, chebyshev_basis, graph_filter


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_chebyshev_basis_is_cos_k_theta_on_a_diagonal_graph():
    # T_k(cos t) = cos(k t): on A = diag(cos t_i), T_k(A) z = cos(k t_i) z_i
    t = torch.linspace(0.1, 3.0, 9, dtype=torch.float64)
    z = _rand(1, 9, 2)
    basis = chebyshev_basis(lambda v: torch.cos(t)[None, :, None] * v, z, 6)
    assert len(basis) == 6
    for k, term in enumerate(basis):
        assert torch.allclose(term, torch.cos(k * t)[None, :, None] * z, atol=1e-13), k


def test_chebyshev_basis_against_matrix_recurrence():
    a = _rand(2, 7, 7, seed=1)
    a = (a + a.transpose(1, 2)) / 8
    z = _rand(2, 7, 3, seed=2)
    calls = []

    def apply_a(v):
        calls.append(1)
        return a @ v

    basis = chebyshev_basis(apply_a, z, 5)
    assert len(calls) == 4  # order - 1 applications of A, no matrix power formed
    eye = torch.eye(7, dtype=a.dtype).expand_as(a)
    t = [eye, a]
    for _ in range(3):
        t.append(2 * a @ t[-1] - t[-2])
    for k in range(5):
        assert torch.allclose(basis[k], t[k] @ z, atol=1e-12), k
    assert torch.allclose(t[4], 8 * a.matrix_power(4) - 8 * a.matrix_power(2) + eye, atol=1e-12)


def test_chebyshev_basis_order_one_does_not_apply_a():
    z = _rand(1, 4, 2)
    basis = chebyshev_basis(lambda v: pytest.fail('A applied'), z, 1)
    assert len(basis) == 1 and basis[0] is z
    with pytest.raises(ValueError, match='order must be >= 1, got 0'):
        chebyshev_basis(lambda v: v, z, 0)


def _weights(n, c_in=3, c_out=4, seed=10):
    ws = [_rand(c_in, c_out, seed=seed + i) for i in range(n)]
    return ws, [lambda v, w=w: v @ w for w in ws]


def test_graph_filter_own_weights_sum_all_terms():
    a, z = _rand(2, 6, 6, seed=3) / 4, _rand(2, 6, 3, seed=4)
    ws, maps = _weights(3)
    spec = FilterSpec(order=3)
    out = graph_filter(lambda v: a @ v, z, spec, maps)
    t2 = 2 * a @ a - torch.eye(6, dtype=a.dtype)
    assert torch.allclose(out, z @ ws[0] + a @ z @ ws[1] + t2 @ z @ ws[2], atol=1e-12)


def test_graph_filter_shared_weight_is_ns():
    a, z = _rand(2, 6, 6, seed=5) / 4, _rand(2, 6, 3, seed=6)
    ws, maps = _weights(1)
    spec = FilterSpec(order=2, terms=(0, 1), shared_coefficients=(-1, 1))
    assert spec.num_weights == 1 and spec.needed_order == 2
    out = graph_filter(lambda v: a @ v, z, spec, maps)
    assert torch.allclose(out, (a @ z - z) @ ws[0], atol=1e-12)


def test_graph_filter_selected_terms():
    a, z = _rand(1, 5, 5, seed=7) / 4, _rand(1, 5, 3, seed=8)
    ws, maps = _weights(2)
    spec = FilterSpec(order=4, terms=(1, 3))
    assert spec.num_weights == 2 and spec.needed_order == 4
    out = graph_filter(lambda v: a @ v, z, spec, maps)
    t3 = 4 * a @ a @ a - 3 * a
    assert torch.allclose(out, a @ z @ ws[0] + t3 @ z @ ws[1], atol=1e-12)
    # a term set below the order computes only what it needs
    calls = []
    graph_filter(lambda v: calls.append(1) or a @ v, z, FilterSpec(order=4, terms=(1,)), maps[:1])
    assert len(calls) == 1


def test_graph_filter_wrong_number_of_weights():
    with pytest.raises(ValueError, match='needs 2 weights, got 1'):
        graph_filter(lambda v: v, _rand(1, 3, 2), FilterSpec(order=2), [lambda v: v])


def test_filter_spec_defaults_and_repr():
    spec = FilterSpec()
    assert spec.order == 2 and spec.terms == (0, 1) and spec.shared_coefficients is None
    assert spec.num_weights == 2
    assert 'order=2' in repr(spec)
    assert FilterSpec(3, shared_coefficients=(1, 2, 3)).shared_coefficients == (1.0, 2.0, 3.0)


@pytest.mark.parametrize('kwargs,message', [
    (dict(order=0), r'order must be an integer >= 1, got 0'),
    (dict(order=2.0), r'order must be an integer >= 1, got 2.0'),
    (dict(order=2, terms=()), r'terms must be distinct indices in range\(order=2\), got \(\)'),
    (dict(order=2, terms=(0, 2)), r'terms must be distinct indices in range\(order=2\)'),
    (dict(order=3, terms=(1, 1)), r'terms must be distinct indices in range\(order=3\)'),
    (dict(order=3, terms=(-1,)), r'terms must be distinct indices'),
    (dict(order=2, terms=(0.0, 1)), r'terms must be distinct indices'),
    (dict(order=2, shared_coefficients=(1,)), r'shared_coefficients needs one value per kept term'),
])
def test_filter_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FilterSpec(**kwargs)


def test_higher_order_is_bounded_on_a_normalised_graph():
    # |T_k(x)| <= 1 on [-1, 1]: with a symmetric normalised A the series never blows up with k
    m = _rand(1, 8, 8, seed=9).abs()
    m = (m + m.transpose(1, 2)) / 2
    d = m.sum(-1)
    a = m / torch.sqrt(d[:, :, None] * d[:, None, :])
    z = _rand(1, 8, 2, seed=10)
    basis = chebyshev_basis(lambda v: a @ v, z, 12)
    assert max(t.norm().item() for t in basis) <= z.norm().item() * (1 + 1e-10)
    assert math.isfinite(basis[-1].sum().item())
