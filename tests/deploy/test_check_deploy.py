"""``tools/analysis/check_deploy.py``: its arguments, and one run of every check on a small block (the backend that
needs no code generation)."""
import importlib.util
import json

import pytest


@pytest.fixture(scope='module')
def tool(repo_root):
    spec = importlib.util.spec_from_file_location('check_deploy', repo_root / 'tools/analysis/check_deploy.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arguments(tool, capsys):
    args = tool.parse_args([])
    assert args.blocks is None and args.checks == list(tool.CHECKS) and args.backend == 'inductor'
    with pytest.raises(SystemExit):
        tool.parse_args(['--blocks', 'NonBlock'])
    assert "'NonBlock' is not a registered block" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args(['--shape', '2', '16'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--checks', 'tensorrt'])


def test_every_check_on_one_block(tool, tmp_path, capsys):
    out = tmp_path / 'deploy.json'
    assert tool.main(['--blocks', 'SNLBlock', '--shape', '2', '16', '4', '5', '--backend', 'aot_eager',
                      '--json', str(out)]) == 0
    row = json.loads(out.read_text())['results']['SNLBlock']
    assert row['compile']['graph_breaks'] == 0 and row['compile']['err_param_grads'] < 1e-5
    assert row['fx']['err'] == 0 and row['export']['err'] < 1e-5
    assert row['autocast']['bf16_finite'] and row['autocast']['bf16_err'] < 1e-2
    for exporter in ('onnx_dynamo', 'onnx_torchscript'):
        assert row[exporter]['max_abs_err'] < 1e-4 * max(1.0, row[exporter]['max_abs'])
    table = capsys.readouterr().out
    assert 'SNLBlock' in table and 'onnx dynamo' in table
