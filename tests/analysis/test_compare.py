"""compare_blocks: the runs of a tiny comparison through the real Runner, their summary, table and figures."""
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from snl_mm.analysis.compare import BASELINE, Variant, compare, make_variants, run_config, summarise, task_config
from snl_mm.analysis.compare_report import format_table, write_results

REPO = Path(__file__).resolve().parents[2]
#: a few iterations on a few images: the mechanics, not the accuracy
TINY = {'train_dataloader.dataset.num_samples': 32, 'train_dataloader.batch_size': 8,
        'val_dataloader.dataset.num_samples': 16, 'test_dataloader.dataset.num_samples': 16,
        'train_cfg.max_epochs': 2, 'param_scheduler.1.end': 2, 'param_scheduler.1.T_max': 1}


def test_variants_and_errors():
    variants = make_variants(['SNLBlock', 'NLBlock'], ["k3={'graph_filter': {'order': 3}}"])
    assert [v.name for v in variants] == [BASELINE, 'SNLBlock', 'NLBlock', 'k3']
    assert variants[0].block is None and variants[3].block == dict(type='GraphNonlocalBlock',
                                                                   graph_filter=dict(order=3))
    with pytest.raises(ValueError, match='registered blocks'):
        make_variants(['SNLBlok'])
    with pytest.raises(ValueError, match='NAME='):
        make_variants([], ['k3=[1, 2]'])
    with pytest.raises(ValueError, match='must differ'):
        make_variants(['SNLBlock'], ["SNLBlock={'graph_filter': {'order': 2}}"])
    with pytest.raises(ValueError, match="one of \\['majority', 'pair', 'pathfinder', 'video'\\]"):
        task_config('pairs')
    assert all(Path(task_config(t)).is_file() for t in ('pair', 'majority', 'pathfinder', 'video'))


def test_run_config_inserts_the_block_at_the_site(tmp_path):
    cfg = run_config(task_config('pair'), Variant('SNLBlock', dict(type='SNLBlock')), 7, str(tmp_path), TINY,
                     str(tmp_path / 'cache'))
    (entry, ) = cfg.model.backbone.plugins
    assert entry == dict(cfg=dict(type='SNLBlock'), stages=(True, ), position='after_block', blocks=(1, ))
    assert cfg.randomness.seed == 7 and cfg.work_dir == str(tmp_path)
    assert cfg.train_dataloader.dataset.cache_dir == str(tmp_path / 'cache')
    assert cfg.train_dataloader.dataset.num_samples == 32
    base = run_config(task_config('pair'), Variant(BASELINE), 0, str(tmp_path))
    assert not base.model.backbone.get('plugins')
    no_site = tmp_path / 'no_site.py'
    no_site.write_text(f"_base_ = '{task_config('pair')}'\nblock_site = None\n")
    with pytest.raises(KeyError, match='block_site'):
        run_config(str(no_site), Variant('NLBlock', dict(type='NLBlock')), 0, str(tmp_path))


def test_summary_statistics_and_ranking():
    records = [dict(variant=v, block=None, seed=s, top1=acc, iter_ms=10. + s, train_s=1., peak_rss_mib=100. + s,
                    **({'params': p, 'flops': f, 'step_mib': 1.} if s == 0 else {}))
               for v, p, f, accs in ((BASELINE, 10, 100, (50., 52., 51.)), ('B', 15, 130, (90., 70., 80.)))
               for s, acc in enumerate(accs)]
    rows = summarise(records, [BASELINE, 'B'])
    assert [r['variant'] for r in rows] == ['B', BASELINE] and [r['rank'] for r in rows] == [1, 2]
    b = rows[0]
    assert b['mean'] == 80. and b['std'] == pytest.approx(statistics.stdev([90., 70., 80.])) == 10.
    assert (b['min'], b['max'], b['iter_ms'], b['peak_rss_mib']) == (70., 90., 11., 102.)
    assert (b['added_params'], b['added_flops'], b['added_step_mib']) == (5, 30, 0.)
    table = format_table(rows)
    assert '| 1 | B | 80.0 ± 10.0 | 70.0 - 90.0 | 15 (+5) |' in table and '3 seeds' in table


def test_tiny_comparison_in_process(tmp_path):
    lines = []
    result = compare(task_config('pair'), make_variants(['SNLBlock']), [0, 1], str(tmp_path), cfg_options=TINY,
                     isolate=False, progress=lines.append)
    records = result['records']
    assert [(r['variant'], r['seed']) for r in records] == [(BASELINE, 0), (BASELINE, 1), ('SNLBlock', 0),
                                                            ('SNLBlock', 1)]
    for r in records:
        assert r['iters'] == 8 and len(r['loss']) == 8 and len(r['val_top1']) == 2  # 2 epochs of 4 iterations
        assert 0 <= r['top1'] <= 100 and r['iter_ms'] > 0 and r['peak_rss_mib'] > 0
        assert Path(r['work_dir'], 'epoch_2.pth').is_file()
    snl = next(r for r in result['rows'] if r['variant'] == 'SNLBlock')
    base = next(r for r in result['rows'] if r['variant'] == BASELINE)
    # the block's parameters: theta, phi, g (16 -> 8), w1, w2 (8 -> 16), its BN (2 x 16)
    assert snl['added_params'] == 5 * 16 * 8 + 2 * 16
    assert snl['added_flops'] > 0 and base['step_mib'] > 0
    assert sum(line.startswith('[') for line in lines) == 4 and any('epoch 2/2' in line for line in lines)
    written = write_results(result, str(tmp_path / 'out'))
    data = json.loads(Path(written['json'][0]).read_text())
    assert data['machine']['cpus'] >= 1 and len(data['records']) == 4 and data['load']['max'] >= 0
    for kind in ('accuracy_vs_cost', 'learning_curves'):
        assert [Path(p).suffix for p in written[kind]] == ['.png', '.pdf', '.svg']
        assert all(Path(p).stat().st_size > 1000 for p in written[kind])


def test_tool_runs_models_in_their_own_processes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('compare_tool', REPO / 'tools/analysis/compare_blocks.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    options = [f'{k}={v}' for k, v in TINY.items()]
    assert tool.main(['--task', 'pair', '--blocks', 'CCBlock', '--seeds', '3', '--out', str(tmp_path),
                      '--cfg-options', *options]) == 0
    out = capsys.readouterr().out
    assert '[1/2]' in out and '[2/2]' in out and 'wall time' in out and '| CCBlock |' in out
    # each model's console output went to its own log; the generated data were cached once for both
    assert (tmp_path / 'CCBlock' / 'run.log').stat().st_size > 0 and (tmp_path / BASELINE / 'run.log').exists()
    assert sorted(p.name.split('-')[1] for p in (tmp_path / 'data_cache').glob('*.pkl')) == ['test', 'train', 'val']
    data = json.loads((tmp_path / 'results.json').read_text())
    assert {r['variant'] for r in data['rows']} == {BASELINE, 'CCBlock'}
