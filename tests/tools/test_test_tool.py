"""tools/test.py as users of mmpretrain and mmaction2 type it: ``--dump``, ``--tta``, ``--show-dir``.

The tool runs on the demo model with a flip test-time augmentation declared in the config; the dumped scores are
checked against the model's own scores of each image and, with ``--tta``, of the image and its mirror, averaged.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import mmengine
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DATASETS, MODELS, init_default_scope

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'demo' / 'preresnet20-snl_relation.py'
CONFIG_WITH_TTA = f"""\
_base_ = '{DEMO}'
tta_model = dict(type='AverageClsScoreTTA')
tta_pipeline = [dict(type='TestTimeAug',
                     transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                                 [dict(type='PackInputs')]])]
test_dataloader = dict(batch_size=4, dataset=dict(num_samples=8))
"""


def _load_tool():
    spec = importlib.util.spec_from_file_location('snl_mm_tools_test', REPO / 'tools' / 'test.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_tool(root: Path, config: Path, *flags: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'test.py'), str(config), str(root / 'model.pth'), '--work-dir',
         str(root / 'work'), *flags], cwd=str(root), capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO), MPLBACKEND='Agg'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope='module')
def tested(tmp_path_factory):
    """The demo model with random weights, its checkpoint, and two ``tools/test.py`` runs: with the config's TTA
    (predictions dumped, metrics written), and without it, drawing the predictions."""
    root = tmp_path_factory.mktemp('test_tool')
    config = root / 'demo_tta.py'
    config.write_text(CONFIG_WITH_TTA)
    cfg = Config.fromfile(str(config))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    # as the Runner builds it: the config's top-level data_preprocessor (the demo's normalisation) goes in
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    for p in model.parameters():  # the SNL block starts as the identity: give it weights that act
        p.data.normal_(0, 0.3)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), root / 'model.pth')
    _run_tool(root, config, '--tta', '--dump', str(root / 'tta.pkl'), '--out', str(root / 'metrics.json'),
              '--out-item', 'metrics')
    _run_tool(root, config, '--show-dir', str(root / 'vis'), '--dump', str(root / 'plain.pkl'))
    return root, cfg, model.eval()


def test_dumps_hold_the_scores_and_their_flip_average(tested):
    root, cfg, model = tested
    with_tta, plain = mmengine.load(str(root / 'tta.pkl')), mmengine.load(str(root / 'plain.pkl'))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    assert len(with_tta) == len(plain) == len(dataset) == 8
    for sample, tta, prediction in zip(dataset, with_tta, plain):
        image = sample['inputs']
        with torch.no_grad():
            flipped, scores = [
                model.test_step(dict(inputs=[x], data_samples=[sample['data_samples']]))[0].pred_score
                for x in (image.flip(-1), image)]
        torch.testing.assert_close(prediction['pred_score'], scores, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(tta['pred_score'], (flipped + scores) / 2, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(flipped, scores)  # the flip changes the scores: the average is a test


def test_show_dir_and_metrics(tested):
    root, _, _ = tested
    assert len(list((root / 'vis').glob('*.png'))) == 8
    assert 'accuracy/top1' in mmengine.load(str(root / 'metrics.json'))


def test_tta_needs_the_configs_tta(monkeypatch):
    tool = _load_tool()
    # a segmentation config inherits mmsegmentation's SegTTAModel and its multi-scale flip pipeline
    seg = str(REPO / 'configs' / 'cityscapes' / 'snl_r50-d8_4xb2-40k_cityscapes-512x1024.py')
    monkeypatch.setattr(sys, 'argv', ['test.py', seg, 'model.pth', '--tta'])
    cfg = tool.merge_args(Config.fromfile(seg), tool.parse_args())
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.decode_head.type == 'snl_mm.NonlocalHead'
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline
    monkeypatch.setattr(sys, 'argv', ['test.py', str(DEMO), 'model.pth', '--tta'])
    with pytest.raises(KeyError, match='--tta: the config defines no tta_model and no tta_pipeline'):
        tool.merge_args(Config.fromfile(str(DEMO)), tool.parse_args())
    monkeypatch.setattr(sys, 'argv', ['test.py', str(DEMO), 'model.pth', '--dump', 'predictions.json'])
    with pytest.raises(ValueError, match='--dump writes a pickle'):
        tool.parse_args()
    monkeypatch.setattr(sys, 'argv', ['test.py', str(DEMO), 'model.pth', '--tta', '--show-dir', 'vis'])
    with pytest.raises(ValueError, match='cannot draw test-time augmented batches'):
        tool.merge_args(Config.fromfile(str(DEMO)), tool.parse_args())
