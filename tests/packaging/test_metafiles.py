"""model-index.yml and configs/*/metafile.yml: in step with the configs, readable by mim's parser, and their
numbers right (measured ones against independent counts, published ones against their source)."""
import importlib.util
import re

import modelindex
import pytest
import yaml
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from tests.packaging.conftest import REPO

PAPER = REPO.parent / 'shared' / 'paper' / 'unified-nonlocal-paper.md'  # beside the checkout


def _tool():
    spec = importlib.util.spec_from_file_location('make_metafiles', REPO / 'tools' / 'misc' / 'make_metafiles.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def models():
    """``{config path under configs/: model entry}`` of every metafile model-index.yml lists."""
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    found = {}
    for metafile in index['Import']:
        for model in yaml.safe_load((REPO / metafile).read_text())['Models']:
            found[model['Config'][len('configs/'):]] = model
    return found


def test_files_match_the_configs():
    problems = _tool().check()
    assert not problems, ('\n'.join(problems) + '\nregenerate them: python tools/misc/make_metafiles.py '
                          '--folders <changed folders>')


def test_mims_parser_reads_them(models):
    index = modelindex.load(str(REPO / 'model-index.yml'))
    assert {m.config for m in index.models} == {f'configs/{c}' for c in models}
    for entry in index.collect_check_errors():
        # README paths are relative to the repository root, as in mmpretrain's metafiles; modelindex resolves
        # them against the metafile's folder
        errors = [e for e in entry['errors'] if not re.fullmatch(r'Path to README file (\S+) is not a valid file\.', e)]
        assert not errors, entry
    for collection in index.collections:
        assert (REPO / collection.readme).is_file()
    assert not any('Weights' in m for m in models.values()), 'no weights are released'


def test_parameters_and_flops_against_independent_counts(models):
    # torchvision's ResNet-50: 25,557,032 parameters, 4.11 GMACs at 224 x 224 (fvcore and mmcv count the same)
    plain = models['imagenet/resnet50_8xb32-110e_in1k.py']['Metadata']
    assert plain['Parameters'] == 25557032
    assert abs(plain['FLOPs'] / 4.11e9 - 1) < 0.005
    # one SNL block at 1024 channels, Cs = 512: theta, phi, g (1024 x 512 each), W1, W2 (512 x 1024 each), and
    # its BatchNorm (2 x 1024): the paper's +2.62M
    snl = models['imagenet/resnet50-snl_8xb32-110e_in1k.py']['Metadata']
    assert snl['Blocks Parameters'] == 5 * 1024 * 512 + 2 * 1024 == snl['Parameters'] - plain['Parameters']
    # the demo: every parameter of the model as built by the registry
    cfg = Config.fromfile(str(REPO / 'configs' / 'demo' / 'preresnet20-snl_relation.py'))
    init_default_scope(cfg.default_scope)
    built = MODELS.build(cfg.model)
    assert models['demo/preresnet20-snl_relation.py']['Metadata']['Parameters'] == \
        sum(p.numel() for p in built.parameters())


def test_published_numbers_are_the_sources(models):
    paper = PAPER.read_text() if PAPER.exists() else None
    published = yaml.safe_load((REPO / 'tools' / 'misc' / 'published_results.yml').read_text())['results']
    checked = 0
    for config, entry in published.items():
        model = models[config]
        metrics = {k: v for r in model['Results'] for k, v in r['Metrics'].items()}
        if 'metrics' in entry:
            assert metrics == entry['metrics'] and model['Results From'] == entry['source']
        if paper is not None and entry.get('source', '').startswith('the paper'):
            for value in metrics.values():  # every number is printed in the paper's tables
                assert f'{value:.2f}' in paper, (config, value)
                checked += 1
    assert paper is None or checked >= 100
    zoo = models['cityscapes/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py']
    assert zoo['Results'][0]['Metrics']['mIoU'] == 72.25 and 'mmsegmentation model zoo' in zoo['Results From']
