"""The whole-model table of the benchmark: the models it builds without mmsegmentation are the configs' models
(same parameters as mmsegmentation's, same outputs where the two can be compared), and a tiny run on the CPU
fills every column."""
import pytest
import torch
from mmengine.config import Config

from snl_mm.analysis.benchmark.model_table import (GIB, format_model_table, held_bytes, parse_models,
                                                   run_models)
from snl_mm.analysis.benchmark.models import build_head, build_model, build_seg_model, model_variants
from snl_mm.blocks import BLOCK_NAMES
from snl_mm.utils import mmseg_available
from tests.helpers import rel_err


def _mmseg_names(state):
    """mmsegmentation's deep-stem names (a plain sequence: conv, norm, ReLU, ...) as mmpretrain's ConvModules."""
    renamed = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[:2] == ['backbone', 'stem']:
            i, kind = divmod(int(parts[2]), 3)
            parts[2:3] = [str(i), 'conv' if kind == 0 else 'bn']
        renamed['.'.join(parts)] = value
    return renamed


def _mmseg_model(cfg):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def test_every_block_has_a_variant_in_each_family():
    for family, baseline in (('seg', 'fcn'), ('i3d', 'i3d')):
        variants = model_variants(family)
        assert list(variants) == [baseline] + [name[:-len('Block')].lower() for name in BLOCK_NAMES]
        assert all(path.exists() for path in variants.values())


@pytest.mark.skipif(not mmseg_available(), reason='mmsegmentation needs the compiled mmcv (tools/build_mmcv.sh)')
def test_seg_models_have_mmsegmentations_parameters():
    """The whole FCN model, and every block variant's decode head, against mmsegmentation's."""
    from mmseg.registry import MODELS

    def shapes(state):
        return {k: tuple(v.shape) for k, v in state.items()}

    for variant, path in model_variants('seg').items():
        cfg = Config.fromfile(str(path))
        if variant == 'fcn':
            theirs = _mmseg_names(_mmseg_model(cfg).state_dict())
            assert shapes(build_model('seg', cfg).state_dict()) == shapes(theirs)
            continue
        ours, _ = build_head(cfg.model.decode_head, 'decode_head')
        assert shapes(ours.state_dict()) == shapes(MODELS.build(cfg.model.decode_head).state_dict()), variant


@pytest.mark.skipif(not mmseg_available(), reason='mmsegmentation needs the compiled mmcv (tools/build_mmcv.sh)')
@pytest.mark.parametrize('variant', ['fcn', 'snl'])
def test_seg_model_computes_what_mmsegmentation_computes(variant):
    """With mmsegmentation's weights: the backbone equals its ResNetV1c with ``contract_dilation=False`` (the one
    argument mmpretrain's lacks), and both heads give its logits on the same features."""
    cfg = Config.fromfile(str(model_variants('seg')[variant]))
    torch.manual_seed(0)
    theirs = _mmseg_model(cfg).eval()
    for m in theirs.modules():  # running statistics away from (0, 1), norms of non-trivial weight
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    ours = build_model('seg', cfg).eval()
    ours.load_state_dict(_mmseg_names(theirs.state_dict()))
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS
    plain = revert_sync_batchnorm(MODELS.build(dict(cfg.model.backbone, contract_dilation=False, pretrained=None)))
    plain.eval()  # mmsegmentation's ResNet.train returns None
    plain.load_state_dict(theirs.backbone.state_dict())
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        feats = ours.backbone(x)
        for a, b in zip(feats, plain(x)):
            assert rel_err(a, b) < 1e-5
        for name in ('decode_head', 'auxiliary_head'):
            assert rel_err(getattr(ours, name)(feats), getattr(theirs, name).forward(list(feats))) < 1e-5


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"model family must be one of \('seg', 'i3d'\)"):
        parse_models(['det'])
    with pytest.raises(ValueError, match=r"variant 'xyz' of 'seg' must be one of \('fcn', 'nl'"):
        parse_models(['seg/xyz'])
    assert [(f, v) for f, v, _ in parse_models(['i3d/snl', 'seg/fcn'])] == [('i3d', 'snl'), ('seg', 'fcn')]
    # what cannot be built without mmsegmentation stops the build, naming the field
    head = dict(type='FCNHead', in_channels=8, channels=4, num_classes=2, act_cfg=dict(type='GELU'))
    with pytest.raises(ValueError, match=r"model.decode_head: \['act_cfg'\] cannot be built here"):
        build_head(head, 'decode_head')
    with pytest.raises(ValueError, match=r"model.decode_head.type: one of .* got 'PSPHead'"):
        build_head(dict(head, type='PSPHead'), 'decode_head')
    with pytest.raises(ValueError, match=r"model.backbone: \['multi_grid'\] need mmsegmentation's own ResNetV1c"):
        build_seg_model(dict(backbone=dict(type='ResNetV1c', depth=50, multi_grid=(1, 2, 4)), decode_head=head))


def test_held_bytes_counts_each_storage_once():
    a = torch.zeros(256)
    assert held_bytes([a, a[:10], None], [torch.zeros(4, dtype=torch.float64)]) == 256 * 4 + 4 * 8


def test_tiny_model_table_on_cpu():
    rows = run_models(['seg/snl'], steps=1, warmup=1, infer_runs=1, batch=1, shape=(3, 32, 64), log=None)
    rows += run_models(['i3d/nl'], steps=1, warmup=1, infer_runs=1, batch=1, shape=(3, 8, 64, 64), log=None)
    for r in rows:
        assert r['status'] == 'ok' and r['infer_fps'] > 0 and r['train_s_per_iter'] > 0
        # weights, their gradients and momentum at least
        assert r['train_mem_gib'] * GIB > 3 * 4 * r['params_m'] * 1e6
    assert rows[0]['params_m'] > 45 and rows[1]['params_m'] > 25  # ResNet-50-D8 + heads; I3D R-50 + NL
    table = format_model_table(rows)
    assert '| FCN + SNL | R-50-D8 | 32x64 | 1 | fp32 |' in table
    assert '| I3D + NL | R-50 | 8x64x64 | 1 | fp32 |' in table
