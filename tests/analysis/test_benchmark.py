"""Smoke test of the block benchmark on tiny cases (it is a tool, not a test of speed: nothing here is timed
against a threshold)."""
import json

import pytest
import torch

from snl_mm.analysis.benchmark import (Case, OfficialOrderSNL, format_table, parse_shape, peak_memory_mib,
                                       ratio_table, reference, run_benchmark, run_model_step, write_results)


def test_tiny_case_in_a_fresh_process_writes_json_csv_png(tmp_path):
    rows = run_benchmark([Case('SNLBlock', (2, 16, 6, 6))], impls=('block', 'dense', 'mmcv'), repeats=2,
                         isolate=True, log=None)
    by_impl = {r['impl']: r for r in rows}
    assert set(by_impl) == {'block', 'dense', 'mmcv'}
    assert by_impl['mmcv']['status'].startswith('skipped')  # mmcv has no SNL
    for impl in ('block', 'dense'):
        r = by_impl[impl]
        assert r['status'] == 'ok' and r['time_ms'] > 0 and r['peak_mib'] > 0 and r['repeats'] == 2
    # the official order of products gives the same numbers as the block
    assert by_impl['dense']['err_out'] < 1e-5 and by_impl['dense']['err_grad'] < 1e-5
    # Cs = 8 and N = 36: the cost model takes the factored order, compared here with the dense reference
    assert by_impl['block']['products_ms'] > 0 and by_impl['block']['path'] == 'factored'

    paths = write_results(rows, str(tmp_path))
    data = json.loads(open(paths['json']).read())
    assert data['machine']['cpus'] >= 1 and len(data['rows']) == 3
    assert data['ratios'][0]['time_x_dense'] > 0
    header, *lines = open(paths['csv']).read().splitlines()
    assert header.startswith('block,cfg,shape') and len(lines) == 3
    with open(paths['png'], 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    text = format_table(rows)
    assert 'SNLBlock (2, 16, 6, 6)' in text and 'x products' in text


def test_nl_against_mmcv_and_memory_only(tmp_path):
    rows = run_benchmark([Case('NLBlock', (1, 8, 4, 6)), Case('NLBlock', (1, 8, 24))], impls=('block', 'mmcv'),
                         repeats=1, isolate=False, products=False, log=None)
    mmcv_rows = [r for r in rows if r['impl'] == 'mmcv']
    assert [r['status'] for r in mmcv_rows] == ['ok', 'ok']  # NonLocal2d and NonLocal1d, same numbers
    assert all(r['err_out'] < 1e-5 for r in mmcv_rows)
    only = run_benchmark([Case('SNLBlock', (1, 8, 16, 16), dict(path='factored'))], impls=('block', ),
                         timing=False, isolate=False, log=None)
    assert len(only) == 1 and 'time_ms' not in only[0] and only[0]['peak_mib'] > 0
    assert only[0]['path'] == 'factored'
    assert ratio_table(only)[0]['path'] == 'factored'


def test_peak_memory_counts_what_a_run_allocates():
    device = torch.device('cpu')

    def run():
        a = torch.ones(1 << 20)  # 4 MiB
        b = torch.ones(1 << 20)
        del a, b
        torch.ones(1 << 19)  # 2 MiB, after both were freed

    assert peak_memory_mib(run, device) == pytest.approx(8.0, abs=0.01)


def test_official_order_reference_matches_the_block():
    from snl_mm.analysis.benchmark import build_block
    block = build_block(Case('SNLBlock', (2, 8, 5, 7)))
    ref, why = reference('dense', block, (2, 8, 5, 7))
    assert isinstance(ref, OfficialOrderSNL) and why == ''
    x = torch.randn(2, 8, 5, 7)
    y, y_ref = block(x), ref(x)
    assert torch.allclose(y, y_ref, atol=1e-6) and not torch.allclose(y, x)
    assert reference('mmcv', block, (2, 8, 5, 7)) == (None, 'no mmcv implementation')


def test_model_step_and_arguments():
    plugins = [dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False), position='after_block',
                    blocks=(-1, ))]
    result = run_model_step((2, 3, 32, 32), plugins, depth=18, repeats=1, isolate=False)
    assert result['ratio'] > 0 and result['blocks_params'] > result['plain_params']
    assert parse_shape('8,1024,14,14') == (8, 1024, 14, 14)
    with pytest.raises(ValueError, match='B,C,\\*S'):
        parse_shape('8,1024')
    with pytest.raises(ValueError, match="device must be one of \\('cpu', 'cuda'\\)"):
        run_benchmark([Case('SNLBlock', (1, 4, 4))], device='tpu')
    with pytest.raises(ValueError, match='impls must be among'):
        run_benchmark([Case('SNLBlock', (1, 4, 4))], impls=('block', 'fast'))


def test_cli_in_process(tmp_path):
    import importlib.util
    import sys
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / 'tools' / 'analysis' / 'benchmark_blocks.py'
    spec = importlib.util.spec_from_file_location('benchmark_blocks', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'out'
    assert tool.main(['--blocks', 'NSBlock', '--shapes', '1,8,4,4', '--impls', 'block', 'dense', '--repeats',
                      '1', '--in-process', '--out-dir', str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {'results.json', 'results.csv', 'benchmark.png'}
    assert sys.modules.get('matplotlib') is not None


def test_mmcv_criss_cross_without_compiled_ops(python, subprocess_env):
    """With mmcv-lite (``mmcv.ops`` does not import) mmcv's pure-PyTorch ``CrissCrossAttention`` is loaded from its
    own source file: the reference of CC on a GPU machine that has no compiled mmcv."""
    import subprocess
    code = '''
import sys
sys.modules['mmcv.ops'] = None  # what mmcv-lite gives: the import of mmcv.ops fails
import torch
from snl_mm.analysis.benchmark import Case, build_block, reference
block = build_block(Case('CCBlock', (2, 16, 5, 7)))
ref, why = reference('mmcv', block, (2, 16, 5, 7))
assert why == '' and type(ref.module).__module__ == 'mmcv_ops_cc_attention', (why, type(ref.module))
x = torch.randn(2, 16, 5, 7)
y, y_ref = block(x), ref(x)
err = ((y - y_ref).norm() / y.norm()).item()
assert err < 1e-5 and not torch.allclose(y, x), err
print('ok', err)
'''
    out = subprocess.run([python, '-c', code], env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith('ok'), out.stderr[-3000:]
