"""Parameter and FLOP counts: the paper's Table 6 for ResNet-50 + one block, and the product handles."""
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snl_mm.analysis.flops import (PAPER_TABLE6, analyze, analyze_config, format_report, paper_figure)

CONFIGS = {
    'SNLBlock': 'configs/imagenet/resnet50-snl_8xb32-110e_in1k.py',
    'NLBlock': 'configs/imagenet/resnet50-nl_8xb32-110e_in1k.py',
    'CGNLBlock': 'configs/imagenet/resnet50-cgnl_8xb32-110e_in1k.py',
    'NSBlock': 'configs/imagenet/resnet50-ns_8xb32-110e_in1k.py',
    'A2Block': 'configs/imagenet/resnet50-a2-double-attention_8xb32-110e_in1k.py',
    'CCBlock': 'configs/imagenet/resnet50-cc_8xb32-110e_in1k.py',
}
BASELINE = 'configs/imagenet/resnet50_8xb32-110e_in1k.py'


@pytest.fixture(scope='module')
def baseline(repo_root):
    return analyze_config(str(repo_root / BASELINE), (224, 224))


@pytest.mark.parametrize('block', ['SNLBlock', 'NLBlock', 'CGNLBlock'])
def test_table6_counts(block, baseline, repo_root):
    """SNL +0.51 GFLOPs / +2.62M, NL and CGNL (one group) +0.41 / +2.09M: the 1x1 convolutions of one block
    before the last block of res4, at 224 x 224 (the paper truncates to two decimals)."""
    report = analyze_config(str(repo_root / CONFIGS[block]), (224, 224))
    print('\n' + format_report(report, CONFIGS[block]))
    assert [b.type for b in report.blocks] == [block]
    assert '.backbone.layer3.4.' in report.blocks[0].name  # before the last block of res4
    conv_flops, conv_weights = report.added(paper_counting=True)
    gflops, mparams = PAPER_TABLE6[block]
    assert paper_figure(conv_flops / 1e9) == gflops
    assert paper_figure(conv_weights / 1e6) == mparams
    # the model grows by exactly the block: its parameters, and its FLOPs with the products counted too
    flops, params = report.added()
    assert report.params - baseline.params == params
    assert report.flops - baseline.flops == flops
    assert flops > conv_flops  # the affinity products and the norm are counted in the full figure


@pytest.mark.parametrize('block', ['NSBlock', 'A2Block', 'CCBlock'])
def test_other_blocks_are_counted(block, baseline, repo_root):
    """The blocks without a (consistent) Table 6 entry: counted the same way, printed."""
    report = analyze_config(str(repo_root / CONFIGS[block]), (224, 224))
    print('\n' + format_report(report, CONFIGS[block]))
    assert [b.type for b in report.blocks] == [block]
    flops, params = report.added()
    assert report.params - baseline.params == params > 0
    assert report.flops - baseline.flops == flops > report.added(paper_counting=True)[0] > 0


def test_baseline_resnet50(baseline):
    # fvcore-style count of ResNet-50 at 224: 4.11 GMACs, 25.56M parameters (the paper: 4.14 / 25.56)
    assert round(baseline.params / 1e6, 2) == 25.56
    assert 4.0e9 < baseline.flops < 4.2e9
    assert baseline.blocks == []


class _Products(nn.Module):

    def forward(self, x, w, q, k, v, a, b, c):
        y = torch.matmul(w, x)  # (C', C) @ (B, C, N): the batch is broadcast from the second operand
        z = F.scaled_dot_product_attention(q, k, v)
        t = torch.baddbmm(c, a, b)
        return y.sum() + z.sum() + t.sum()


def test_product_handles():
    from snl_mm.blocks import NonlocalBase  # noqa: F401
    x, w = torch.randn(3, 8, 10), torch.randn(5, 8)
    q, k, v = torch.randn(2, 4, 6, 16), torch.randn(2, 4, 7, 16), torch.randn(2, 4, 7, 12)
    a, b, c = torch.randn(3, 4, 5), torch.randn(3, 5, 6), torch.randn(3, 4, 6)
    report = analyze(_Products(), (x, w, q, k, v, a, b, c))
    assert report.by_operator['matmul'] == 3 * 5 * 8 * 10
    assert report.by_operator['scaled_dot_product_attention'] == 2 * 4 * 6 * 7 * (16 + 12)
    assert report.by_operator['baddbmm'] == 3 * 4 * 5 * 6
    assert report.blocks == []


def test_paper_figure_truncates():
    assert paper_figure(4 * 1024 * 512 / 1e6) == 2.09  # NL's weights: 2.097M, written +2.09M
    assert paper_figure(0.5138) == 0.51 and paper_figure(2.62) == 2.62
    assert math.isclose(paper_figure(0.41), 0.41)


def test_get_flops_tool(repo_root, subprocess_env, tmp_path):
    out = tmp_path / 'snl.json'
    result = subprocess.run(
        [sys.executable, 'tools/analysis/get_flops.py', CONFIGS['SNLBlock'], '--shape', '224', '224', '--json',
         str(out)], cwd=repo_root, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'Table 6 style +0.51 / +2.62M' in result.stdout
    assert 'bmm' in result.stdout  # the affinity products are part of the full count
    import json
    data = json.loads(out.read_text())
    assert data['blocks'][0]['type'] == 'SNLBlock'
    assert data['blocks_conv_weights'] == 5 * 1024 * 512
