"""Spectral diagnostics: SNL's affinity is symmetric with its spectrum in [-1, 1], NL's is not, and the plotted
frequency response is what the block does to each graph frequency (float64 references from the math)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from snl_mm.analysis.spectrum import (SYMMETRY_TOL, affinity_cores, affinity_stats, block_report, filter_response,
                                      plot_spectra)
from snl_mm.blocks import BLOCK_NAMES, FAMILY_NAMES, find_blocks
from snl_mm.graph import graph_filter
from snl_mm.registry import MODELS, ROOT_MODELS
from tests.helpers import randomise_

LAMBDAS = [-1.0, -0.3, 0.0, 0.55, 1.0]


def trained_like(block_type: str, seed: int = 0, size: int = 12, **cfg):
    """A PreResNet-20 with one block after the second residual block of stage 1, every weight random."""
    torch.manual_seed(seed)
    model = MODELS.build(dict(type='snl_mm.PreResNet', depth=20, plugins=[
        dict(cfg=dict(type=block_type, **cfg), stages=(True, False, False), position='after_block', blocks=(1, ))]))
    randomise_(model, std=0.3, seed=seed)
    model.eval()
    name, block = next(iter(find_blocks(model).items()))
    x = []
    block.register_forward_pre_hook(lambda m, args: x.append(args[0].detach()))
    with torch.no_grad():
        model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed)))
    return name, block, x[0]


@torch.no_grad()
def snl_reference_affinity(block, x):
    """Eq. 5 in float64 from the block's weights: A = D^-1/2 (M + M^T)/2 D^-1/2, M = relu(theta) relu(phi)^T."""
    xf = x.double().flatten(2)
    theta = block.theta.weight.double().flatten(1) @ xf
    phi = block.phi.weight.double().flatten(1) @ xf
    p, q = theta.clamp(min=0).transpose(1, 2), phi.clamp(min=0).transpose(1, 2)
    m = p @ q.transpose(1, 2)
    m = (m + m.transpose(1, 2)) / 2
    d = m.sum(-1).rsqrt()
    return d[:, :, None] * m * d[:, None, :]


def test_snl_spectrum_is_real_and_in_the_unit_interval():
    name, block, x = trained_like('SNLBlock')
    report = block_report(name, block, x)
    reference = snl_reference_affinity(block, x)
    assert len(report['samples']) == 2
    for stats, a in zip(report['samples'], reference):
        assert stats['symmetric'] and stats['asymmetry'] <= SYMMETRY_TOL
        assert stats['in_unit_interval'] and stats['num_complex'] == 0 and stats['filter_well_defined']
        assert -1 - 1e-6 <= stats['eig_real_min'] and stats['eig_real_max'] <= 1 + 1e-6
        # the top eigenvalue of a normalised graph with positive degrees is 1 (eigenvector D^1/2 1)
        assert abs(stats['eig_real_max'] - 1) < 1e-6
        expected = np.linalg.eigvalsh(a.numpy())
        got = np.sort(np.asarray(stats['eigenvalues'])[:, 0])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert stats['departure_from_normality'] < 1e-5


def test_nl_affinity_is_asymmetric_with_complex_eigenvalues():
    name, block, x = trained_like('NLBlock')
    report = block_report(name, block, x)
    for stats in report['samples']:
        assert not stats['symmetric'] and stats['asymmetry'] > 0.05, stats['asymmetry']
        assert not stats['in_unit_interval'] and not stats['real_spectrum'] and not stats['filter_well_defined']
        assert stats['num_complex'] > 0 and stats['max_abs_imag'] > 1e-3
        # row-stochastic: rows sum to 1, the spectral radius is 1 (Perron), yet the eigenvectors are not orthogonal
        assert abs(stats['row_sum_min'] - 1) < 1e-6 and abs(stats['row_sum_max'] - 1) < 1e-6
        assert abs(stats['spectral_radius'] - 1) < 1e-6
        assert stats['departure_from_normality'] > 1e-3


def test_snl_response_is_bn_times_w1_plus_lambda_w2_times_wg():
    _, block, _ = trained_like('SNLBlock')
    r = filter_response(block, LAMBDAS)
    w = {k: getattr(block, k).weight.double().flatten(1) for k in ('g', 'w1', 'w2')}
    bn = block.norm
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    assert r['norm_included']
    for lam, got, before in zip(LAMBDAS, r['response'], r['response_before_norm']):
        filt = (w['w1'] + lam * w['w2']) @ w['g']
        torch.testing.assert_close(before, filt, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got, scale[:, None] * filt, rtol=1e-10, atol=1e-12)
    assert r['gain_max'][0] == pytest.approx(torch.linalg.matrix_norm(r['response'][0], 2).item())


def test_response_is_what_the_block_does_to_a_graph_frequency():
    """On an eigenvector u of the block's own affinity, an input v u^T leaves the filter (and norm) as (R v) u^T."""
    _, block, x = trained_like('SNLBlock', seed=3)
    block = block.double()
    x = x[:1].double()
    with torch.no_grad():
        a = block.affinity(x)[0]
    lams, vecs = torch.linalg.eigh(a)
    k = int(torch.argmax(lams))  # also a mid-spectrum one
    for index in (k, len(lams) // 2):
        lam, u = lams[index].item(), vecs[:, index]
        v = torch.randn(block.in_channels, dtype=torch.float64, generator=torch.Generator().manual_seed(index))
        signal = (v[:, None] * u[None, :]).reshape(1, block.in_channels, *x.shape[2:])
        unit = block.filter_units()[0]
        with torch.no_grad():
            def branch(inp):
                z = block.node_features(unit, inp)
                out = graph_filter(lambda t: torch.bmm(a[None], t), z, block.filter_spec, block.filter_weights(unit))
                return block.norm.eval()(out)[0, :, :, 0]
            out = branch(signal) - branch(torch.zeros_like(signal))
        response = filter_response(block, [lam])['response'][0]
        torch.testing.assert_close(out, (response @ v)[:, None] * u[None, :], rtol=1e-8, atol=1e-10)


def test_single_term_blocks_respond_linearly_in_lambda():
    """NL keeps only T_1(A) Z W: R(lambda) = lambda R(1); NS's (A - I) Z W: R(lambda) = (lambda - 1) W'."""
    _, nl, _ = trained_like('NLBlock')
    r = filter_response(nl, LAMBDAS)
    for lam, resp in zip(LAMBDAS, r['response']):
        torch.testing.assert_close(resp, lam * r['response'][-1], rtol=1e-9, atol=1e-12)
    _, ns, _ = trained_like('NSBlock')
    r = filter_response(ns, LAMBDAS)
    torch.testing.assert_close(r['response'][-1], torch.zeros_like(r['response'][-1]), rtol=0, atol=1e-12)
    torch.testing.assert_close(r['response'][0], 2 * r['response'][2], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('block_type', BLOCK_NAMES + ('GraphNonlocalBlock', ))
def test_every_block_is_analysed(block_type):
    # CGNL's graph has a node per (channel, position): a smaller map keeps its dense eigenvalues cheap
    name, block, x = trained_like(block_type, size=6 if block_type == 'CGNLBlock' else 12)
    report = block_report(name, block, x)
    assert 'skipped' not in report, report.get('skipped')
    for stats in report['samples']:
        assert np.isfinite(np.asarray(stats['eigenvalues'])).all()
        assert stats['symmetric'] == (block_type in ('SNLBlock', 'GraphNonlocalBlock'))
        assert stats['filter_well_defined'] == stats['symmetric']
    response = report['response']
    assert 'gain_max' in response and np.isfinite(response['gain_max']).all()
    assert response['norm_included'] == (block_type != 'CGNLBlock')  # CGNL's GroupNorm uses its input's statistics


@pytest.mark.parametrize('block_type', FAMILY_NAMES)
def test_family_blocks_are_analysed(block_type):
    """Every block of the family gives a spectrum; a low-rank affinity (GC's rank one, EMA's bases, ANN's anchors)
    takes it from its small core, whose eigenvalues are the non-zero ones of the dense ``A`` (float64 check)."""
    name, block, x = trained_like(block_type, size=8)
    report = block_report(name, block, x)
    assert 'skipped' not in report, report.get('skipped')
    cores = affinity_cores(block, x[:2])
    assert (cores is not None) == (block_type in ('GCBlock', 'EMABlock', 'APNBBlock', 'AFNBBlock'))
    with torch.no_grad():
        dense = block.affinity(x[:2]).double()
    for i, (stats, a) in enumerate(zip(report['samples'], dense)):
        eig = np.asarray(stats['eigenvalues'])
        assert np.isfinite(eig).all() and len(eig) == a.shape[0]
        if cores is not None:  # the core's eigenvalues are the largest of the dense matrix's, the rest zeros
            r = min(cores.shape[-1], a.shape[0])
            by_size = lambda v: v[np.argsort(-np.abs(v), kind='stable')]  # noqa: E731
            expected = by_size(np.linalg.eigvals(a.numpy()))
            got = by_size(eig[:, 0] + 1j * eig[:, 1])
            np.testing.assert_allclose(np.sort_complex(got[:r]), np.sort_complex(expected[:r]), atol=1e-6)
            np.testing.assert_allclose(got[r:], 0, atol=0)
    assert 'response' in report


def test_non_square_and_too_large_affinities_are_reported():
    stats = affinity_stats(torch.rand(6, 3))
    assert not stats['square'] and 'sub-sampled' in stats['note']
    block = ROOT_MODELS.build(dict(type='SNLBlock', in_channels=8))
    report = block_report('b', block, torch.randn(1, 8, 6, 6), max_nodes=16)
    assert 'max_nodes=16' in report['skipped']


def test_plot_and_tool(tmp_path, repo_root, subprocess_env):
    reports = [block_report(*trained_like(t)) for t in ('SNLBlock', 'NLBlock')]
    written = plot_spectra(reports, str(tmp_path / 'spectrum.png'), 'two blocks')
    assert [p.rsplit('.', 1)[1] for p in written] == ['png', 'pdf', 'svg']

    out = tmp_path / 'tool'
    # an NL block in the demo network, on 16 x 16 images (256 positions)
    tiny = [f'{loader}.dataset.{key}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
            for key in ('num_samples=4', 'img_size=16', 'object_size=4', 'min_distance=8')]
    tiny.append('model.backbone.plugins.0.cfg.type=NLBlock')
    result = subprocess.run([sys.executable, 'tools/analysis/spectrum.py', 'configs/demo/preresnet20-snl_relation.py',
                             '--out', str(out), '--num-samples', '1', '--max-nodes', '1024', '--cfg-options', *tiny],
                            cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / 'spectrum.json').read_text())
    (block, ) = data['blocks']
    assert block['type'] == 'NLBlock' and block['input_shape'] == [1, 16, 16, 16]
    assert not block['samples'][0]['symmetric'] and block['samples'][0]['nodes'] == 256
    # freshly built: the output norm is zero, so the block adds nothing (the identity) at any frequency
    assert max(block['response']['gain_max']) == 0
    assert (out / 'spectrum.png').stat().st_size > 10000 and '[4/4] written' in result.stdout
