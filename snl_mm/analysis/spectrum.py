"""Spectral diagnostics of nonlocal blocks: the paper's Sec. 2.1 argument, measured on real inputs.

A block filters its node features ``Z`` on the graph of its affinity ``A``: ``F(A, Z) = sum_k T_k(A) Z W_k``
(Eq. 4). When ``A`` is symmetric it has an orthonormal eigenbasis ``A = U diag(lambda) U^T`` with real
eigenvalues, and the filter acts on each graph frequency separately: the component of ``Z`` along an eigenvector
``u`` with eigenvalue ``lambda`` leaves as ``u (z^T H(lambda))`` with the frequency response
``H(lambda) = sum_k T_k(lambda) W_k``. That is the filter the paper's Theorem 1 defines, and it needs ``A``
symmetric (Property 1) with its spectrum in ``[-1, 1]`` (the Chebyshev domain, Property 2). SNL's
``A = D^-1/2 (M + M^T)/2 D^-1/2`` with ``M >= 0`` is symmetric and similar to the row-stochastic ``D^-1 M^``, so
its eigenvalues are real and in ``[-1, 1]``, the largest one 1. NL's softmax affinity is row-stochastic but not
symmetric: its eigenvalues are complex in general, its eigenvectors not orthogonal, and ``H(lambda)`` on the real
line does not describe what the block does.

Measured per block, on the block's actual input (caught while the model runs, :mod:`.inputs`), per sample:

* the asymmetry ``||A - A^T||_F / ||A||_F`` (symmetric: below :data:`SYMMETRY_TOL`), the departure from
  normality ``||A A^T - A^T A||_F / ||A||_F^2`` (0 for a normal matrix, whose eigenvectors are orthogonal);
* the eigenvalues of the dense ``A`` in float64 (``eigvalsh`` when symmetric, else the general ``eigvals``; for a
  low-rank affinity those of its small core, :func:`affinity_stats`): the
  range of their real parts against ``[-1, 1]``, the largest imaginary part, the spectral radius, and whether the
  spectral filter is well-defined (``A`` symmetric and its spectrum real in ``[-1, 1]``);
* the frequency response of the block's filter (the first filter unit), the map from an input channel vector
  ``v`` on an eigenvector ``u`` of ``A`` to the output on ``u``: ``R(lambda) = N_o H(lambda) W_Z``, with
  ``W_Z`` the node-feature projection and ``N_o`` the linear part of the output norm when it is a BatchNorm in
  eval mode (a norm that uses the statistics of its input, GroupNorm, is left out and said so). Plotted:
  its largest singular value (the strongest gain over input directions) and its RMS gain
  ``||R(lambda)||_F / sqrt(C)``, over ``lambda`` in ``[-1, 1]``. It is computed by running the block's own
  filter pieces (``node_features``, ``filter_weights``, the output norm) with ``A`` replaced by ``lambda I``.
"""
import copy
import math
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from snl_mm.graph import graph_filter

#: relative Frobenius asymmetry below which an affinity counts as symmetric (float32 rounding of a symmetric A)
SYMMETRY_TOL = 1e-5
#: slack on [-1, 1] and on "real" eigenvalues, relative to the spectral radius
SPECTRUM_TOL = 1e-5


def affinity_stats(a: Tensor, core: Optional[Tensor] = None) -> Dict[str, Any]:
    """Symmetry, normality and eigenvalues of one affinity ``(N, M)`` (float64).

    ``core``: for a low-rank affinity ``A = U V^T`` (rank one, EM bases, pooled anchors) the small ``r x r`` matrix
    ``V^T U`` its operator gives (``core()``), whose eigenvalues are the non-zero ones of ``A``: the spectrum is taken
    from it (plus ``N - r`` zeros) instead of from ``A`` itself, exactly and without the ill-conditioned
    eigen-decomposition of a rank-deficient ``N x N`` matrix."""
    a = a.double()
    n, m = a.shape
    stats: Dict[str, Any] = dict(nodes=n, keys=m, min_entry=a.min().item(), row_sum_min=a.sum(1).min().item(),
                                 row_sum_max=a.sum(1).max().item(), square=n == m)
    if n != m:
        stats['note'] = f'not square ({n} x {m}: sub-sampled keys): no eigenvalues, no graph filter'
        return stats
    norm = a.norm().item()
    asym = (a - a.T).norm().item() / norm if norm else 0.
    symmetric = asym <= SYMMETRY_TOL
    if core is not None:
        # U V^T and V^T U share their non-zero eigenvalues; the larger of the two has the rest zero
        small = torch.linalg.eigvals(core.double())
        small = small[small.abs().argsort(descending=True, stable=True)][:n]
        eig = torch.cat([small, torch.zeros(n - small.numel(), dtype=small.dtype)])
        if symmetric:  # a symmetric A has a real spectrum: the core's imaginary parts are rounding
            eig = eig.real.to(torch.complex128)
    elif symmetric:
        eig = torch.linalg.eigvalsh((a + a.T) / 2).to(torch.complex128)
    else:
        eig = torch.linalg.eigvals(a)
    radius = eig.abs().max().item()
    tol = SPECTRUM_TOL * max(radius, 1.)
    commutator = (a @ a.T - a.T @ a).norm().item() / norm**2 if norm else 0.
    stats.update(asymmetry=asym, symmetric=symmetric, departure_from_normality=commutator,
                 eig_real_min=eig.real.min().item(), eig_real_max=eig.real.max().item(),
                 max_abs_imag=eig.imag.abs().max().item(), num_complex=int((eig.imag.abs() > tol).sum()),
                 spectral_radius=radius)
    real = stats['num_complex'] == 0
    inside = real and eig.real.min().item() >= -1 - tol and eig.real.max().item() <= 1 + tol
    # Theorem 1's filter needs an orthonormal eigenbasis (A symmetric) and Property 2's domain [-1, 1]
    stats.update(real_spectrum=real, in_unit_interval=inside, filter_well_defined=symmetric and inside,
                 eigenvalues=torch.stack([eig.real, eig.imag], 1).tolist())
    return stats


def dense_affinities(block: nn.Module, x: Tensor, max_nodes: int) -> Tensor:
    """``block.affinity(x)`` as ``(S, N, M)`` float64 matrices (CGNL's channel groups are matrices of their own).

    Raises:
        ValueError: the matrices would have more than ``max_nodes`` rows.
    """
    with torch.no_grad():
        a = block.affinity(x)
    if a.shape[-2] > max_nodes:
        raise ValueError(f'{type(block).__name__}: its affinity has {a.shape[-2]} nodes, more than max_nodes='
                         f'{max_nodes}; use a smaller input or raise max_nodes (dense eigenvalues cost O(N^3))')
    return a.reshape(-1, *a.shape[-2:]).double()


def affinity_cores(block: nn.Module, x: Tensor) -> Optional[Tensor]:
    """The ``(B, r, r)`` cores of the block's affinity on ``x`` when its graph operator has one (low-rank
    affinities: ``core()``), else None."""
    with torch.no_grad():
        op = block.graph_operator(x)
    core = getattr(op, 'core', None)
    return None if core is None else core().double()


@torch.no_grad()
def filter_response(block: nn.Module, lambdas: Sequence[float]) -> Dict[str, Any]:
    """The frequency response ``R(lambda)`` of the block's first filter unit (see the module docstring).

    Returns:
        dict: ``lambdas``; ``response`` ``(L, C, C)`` (output channel, input channel); ``gain_max`` and
        ``gain_rms`` per lambda; the same before the unit's output norm (``*_before_norm``; a norm inside a filter
        weight, as NL's ``conv_out``, counts with the weight); ``norm_included`` and, when the norm is left out,
        ``note``.
    """
    block = copy.deepcopy(block).double().eval()
    unit = block.filter_units()[0]
    c = block.in_channels
    probe = torch.eye(c, dtype=torch.float64).reshape(1, c, c, 1)  # input channel p at position p
    norm, _ = block.output_norm(unit)
    affine = norm is None or (isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None)
    weights = block.filter_weights(unit)

    def branch(lam: float, x: Tensor, with_norm: bool) -> Tensor:
        out = graph_filter(lambda z: lam * z, block.node_features(unit, x), block.filter_spec, weights)
        if with_norm and norm is not None:
            out = norm(out)
        return out.reshape(c, c)  # (output channel, position = input channel)

    result: Dict[str, Any] = dict(lambdas=[float(v) for v in lambdas], norm_included=affine,
                                  filter=block.filter_spec.notation)
    for suffix, with_norm in (('', affine), ('_before_norm', False)):
        response = torch.stack([branch(lam, probe, with_norm) - branch(lam, torch.zeros_like(probe), with_norm)
                                for lam in lambdas])
        result['response' + suffix] = response
        result['gain_max' + suffix] = torch.linalg.matrix_norm(response, ord=2).tolist()
        result['gain_rms' + suffix] = (torch.linalg.matrix_norm(response) / math.sqrt(c)).tolist()
    if not affine:
        result['note'] = (f'the output norm ({type(norm).__name__}) normalises with statistics of its input: '
                          'the response is that of the filter before it')
    return result


def block_report(name: str, block: nn.Module, x: Tensor, max_samples: int = 2, max_nodes: int = 2048,
                 num_lambdas: int = 101) -> Dict[str, Any]:
    """Spectra of a block's affinity on ``x`` (its first ``max_samples`` samples) and its filter's response."""
    report: Dict[str, Any] = dict(block=name, type=type(block).__name__, input_shape=list(x.shape),
                                  filter=block.filter_spec.notation, affinity=getattr(block.graph, 'notation', ''))
    try:
        matrices = dense_affinities(block, x[:max_samples], max_nodes)
        cores = affinity_cores(block, x[:max_samples])
        if cores is not None and len(cores) != len(matrices):
            cores = None  # one core per sample only
        report['samples'] = [affinity_stats(a, None if cores is None else cores[i]) for i, a in enumerate(matrices)]
        report['spectrum_from'] = 'dense A' if cores is None else f'{cores.shape[-1]} x {cores.shape[-1]} core'
        report['example'] = matrices[0].float()
    except (ValueError, NotImplementedError) as err:
        report['skipped'] = str(err)
    try:
        report['response'] = filter_response(block, torch.linspace(-1, 1, num_lambdas).tolist())
    except (RuntimeError, ValueError) as err:  # e.g. a sub-sampled NL: max-pooling is not linear
        report['response'] = dict(note=f'no frequency response: {err}')
    return report


def summary_line(report: Dict[str, Any]) -> str:
    """One line per block: symmetry, spectrum range, imaginary parts."""
    head = f'{report["block"]} ({report["type"]}, input {tuple(report["input_shape"])})'
    if 'skipped' in report:
        return f'{head}: {report["skipped"]}'
    parts = []
    for i, s in enumerate(report['samples']):
        if not s['square']:
            parts.append(f'sample {i}: {s["note"]}')
            continue
        parts.append(f'sample {i}: N={s["nodes"]}, {"symmetric" if s["symmetric"] else "not symmetric"} '
                     f'(asymmetry {s["asymmetry"]:.2e}, departure from normality {s["departure_from_normality"]:.2e}), '
                     f'Re(eig) in [{s["eig_real_min"]:+.4f}, {s["eig_real_max"]:+.4f}], max |Im(eig)| '
                     f'{s["max_abs_imag"]:.2e} ({s["num_complex"]} complex); spectral filter '
                     f'{"well-defined" if s["filter_well_defined"] else "NOT well-defined"} (needs A symmetric, '
                     'spectrum in [-1, 1])')
    return head + ':\n    ' + '\n    '.join(parts)


def to_json(reports: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The reports without tensors (the eigenvalues as ``[re, im]`` lists stay)."""
    out = []
    for r in reports:
        r = {k: v for k, v in r.items() if k != 'example'}
        if 'response' in r:
            r['response'] = {k: v for k, v in r['response'].items() if not isinstance(v, Tensor)}
        out.append(r)
    return out


def plot_spectra(reports: List[Dict[str, Any]], path: str, title: Optional[str] = None) -> List[str]:
    """One row per block: its affinity on the first sample, its eigenvalues in the complex plane against the
    interval ``[-1, 1]``, and its filter's frequency response with the eigenvalues (real parts) marked."""
    from .style import DIVERGING_CMAP, SEQUENTIAL_CMAP, add_colorbar, fit_title, paper_style, pyplot, save_figure
    plt = pyplot()
    with paper_style():
        fig, axes = plt.subplots(len(reports), 3, figsize=(7.5, 2.7 * len(reports)), squeeze=False)
        for row, report in zip(axes, reports):
            heading = fit_title(f'{report["type"]} at {report["block"]}', 36)
            if 'example' in report:
                a = report['example'].numpy()
                signed = a.min() < 0
                im = row[0].imshow(a, cmap=DIVERGING_CMAP if signed else SEQUENTIAL_CMAP, interpolation='nearest',
                                   vmin=-abs(a).max() if signed else 0, vmax=abs(a).max() if signed else None)
                add_colorbar(fig, row[0], im, 'A_ij')
                row[0].set_title(f'{heading}\naffinity A of sample 0 ({a.shape[0]} x {a.shape[1]})')
                row[0].set_xlabel('key position j')
                row[0].set_ylabel('query position i')
            else:
                row[0].set_title(heading)
                row[0].text(0.5, 0.5, fit_title(report.get('skipped', 'no affinity'), 40), ha='center', va='center',
                            transform=row[0].transAxes, fontsize=6)
                row[0].set_axis_off()
            _plot_eigenvalues(row[1], report)
            _plot_response(row[2], report)
        if title:
            fig.suptitle(title)
        fig.tight_layout(h_pad=2.0)
        written = save_figure(fig, path)
        plt.close(fig)
    return written


def _plot_eigenvalues(ax, report: Dict[str, Any]) -> None:
    import numpy as np

    from .style import series_style
    samples = [s for s in report.get('samples', []) if s.get('square')]
    if not samples:
        ax.text(0.5, 0.5, 'no eigenvalues', ha='center', va='center', transform=ax.transAxes)
        ax.set_axis_off()
        return
    theta = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(theta), np.sin(theta), color='0.6', linewidth=0.6, linestyle='--', label='unit circle')
    ax.plot([-1, 1], [0, 0], color='0.75', linewidth=3, label='[-1, 1]', zorder=1)
    for i, s in enumerate(samples):
        ev = np.asarray(s['eigenvalues'])
        ax.scatter(ev[:, 0], ev[:, 1], s=6, alpha=0.7, linewidths=0, label=f'sample {i}', zorder=3,
                   **{'color': series_style(i + 1)['color']})
    first = samples[0]
    ax.set_title(f'eigenvalues ({"symmetric" if first["symmetric"] else "asymmetric"} A: '
                 f'{first["asymmetry"]:.1e})\nRe in [{first["eig_real_min"]:.3f}, {first["eig_real_max"]:.3f}], '
                 f'max |Im| {first["max_abs_imag"]:.2g}')
    ax.set_xlabel('Re(lambda)')
    ax.set_ylabel('Im(lambda)')
    ax.set_aspect('equal', adjustable='box')
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.grid(True)
    ax.legend(loc='lower left', fontsize=5, markerscale=2, frameon=False)


def _plot_response(ax, report: Dict[str, Any]) -> None:
    response = report.get('response', {})
    if 'gain_max' not in response:
        ax.text(0.5, 0.5, response.get('note', 'no response'), ha='center', va='center', wrap=True,
                transform=ax.transAxes, fontsize=6)
        ax.set_axis_off()
        return
    lam = response['lambdas']
    where = 'after the output norm' if response['norm_included'] else 'before the output norm'
    ax.plot(lam, response['gain_max'], color='#0072B2', label=f'largest gain ({where})')
    ax.plot(lam, response['gain_rms'], color='#009E73', label='RMS gain')
    if response['norm_included']:
        ax.plot(lam, response['gain_max_before_norm'], color='#0072B2', linestyle=':', label='largest, before norm')
    for s in report.get('samples', [])[:1]:
        if s.get('square'):
            for re, _ in s['eigenvalues']:
                ax.axvline(re, ymin=0, ymax=0.04, color='#D55E00', linewidth=0.4)
    ax.set_title(f'frequency response of\n{response["filter"]}')
    ax.set_xlabel('lambda (eigenvalue of A; ticks: sample 0)')
    ax.set_ylabel('gain')
    ax.set_xlim(-1.05, 1.05)
    ax.grid(True)
    ax.legend(loc='upper center', fontsize=5, frameon=False)
