"""snl_mm.NonlocalHead: FCN head + any block, NLHead checkpoints, norm inheritance, errors, mmcv-lite."""
import subprocess
import sys
import textwrap

import pytest
import torch

from snl_mm.blocks import ALL_BLOCK_NAMES as BLOCKS  # noqa: E402 (the paper's six and the family)
HEAD = dict(in_channels=24, channels=32, num_classes=5, in_index=-1, dropout_ratio=0.0,
            norm_cfg=dict(type='BN', requires_grad=True), align_corners=False)


def _build(cfg):
    from snl_mm.registry import MODELS
    return MODELS.build(cfg)


def _inputs(seed=0, size=(6, 10)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 24, *size, generator=g)]


@pytest.mark.parametrize('block', BLOCKS)
def test_fresh_head_is_fcn_head(block, mmseg):
    """Freshly built and initialised, the head computes exactly what FCNHead computes with the same weights:
    the block starts as the identity, also after the model's ``init_weights``."""
    from mmseg.models.decode_heads import FCNHead
    torch.manual_seed(0)
    head = _build(dict(type='snl_mm.NonlocalHead', block=dict(type=block), **HEAD))
    head.init_weights()
    fcn = FCNHead(num_convs=2, concat_input=True, **HEAD)
    fcn.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith('nl_block.')},
                        strict=True)
    assert type(head.nl_block).__name__ == block and head.nl_block.in_channels == 32
    x = _inputs()
    head.train(), fcn.train()
    assert torch.equal(head(x), fcn(x))
    head.eval(), fcn.eval()
    assert torch.equal(head(x), fcn(x))


def test_nlhead_checkpoint_loads_and_matches(mmseg):
    """mmsegmentation's NLHead state dict loads into NonlocalHead(block=NLBlock) with no key renamed, and
    both compute the same logits (the block made non-trivial first)."""
    from mmseg.models.decode_heads import NLHead
    torch.manual_seed(0)
    nl = NLHead(reduction=2, use_scale=True, mode='embedded_gaussian', **HEAD)
    nl.init_weights()
    with torch.no_grad():  # leave the identity: a non-zero output norm
        nl.nl_block.conv_out.bn.weight.normal_()
        nl.nl_block.conv_out.bn.bias.normal_()
    head = _build(dict(type='snl_mm.NonlocalHead',
                       block=dict(type='NLBlock', reduction=2, use_scale=True, mode='embedded_gaussian'),
                       **HEAD))
    head.load_state_dict(nl.state_dict(), strict=True)
    nl.eval(), head.eval()
    x = _inputs(1)
    ref, out = nl(x), head(x)
    assert (out - ref).norm() / ref.norm() < 1e-5


def test_norm_inheritance(mmseg):
    """The head's norm replaces a block's default batch norm (as NLHead passes its norm to NonLocal2d);
    a block config's own norm_cfg wins; CGNL keeps its GroupNorm."""
    gn_head = dict(HEAD, norm_cfg=dict(type='GN', num_groups=4))
    head = _build(dict(type='snl_mm.NonlocalHead', block=dict(type='SNLBlock'), **gn_head))
    assert head.nl_block.norm_cfg == dict(type='GN', num_groups=4)
    head = _build(dict(type='snl_mm.NonlocalHead',
                       block=dict(type='SNLBlock', norm_cfg=dict(type='BN')), **gn_head))
    assert head.nl_block.norm_cfg == dict(type='BN')
    head = _build(dict(type='snl_mm.NonlocalHead', block=dict(type='CGNLBlock'), **HEAD))
    assert any(isinstance(m, torch.nn.GroupNorm) for m in head.nl_block.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in head.nl_block.modules())


def test_official_snl_head_setting(mmseg):
    """The SNL config's head is the official SNLHead: 512 channels, Cs = 256, one unit, ReLU after BN, and
    the official unit's initialisation (norm weight 1), under which the unit passes gradients."""
    from pathlib import Path

    from mmengine.config import Config
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / 'configs' / 'cityscapes' /
                              'snl_r50-d8_4xb2-40k_cityscapes-512x1024.py'))
    head_cfg = cfg.model.decode_head
    head_cfg.norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group
    head = _build(head_cfg)
    block = head.nl_block
    assert (block.in_channels, block.inner_channels) == (512, 256)
    assert block.act_cfg == dict(type='ReLU') and block.norm_cfg['type'] == 'BN'
    assert block.num_units == 1
    head.init_weights()
    assert torch.equal(block.norm.weight, torch.ones(512)) and torch.equal(block.norm.bias, torch.zeros(512))
    feats = [torch.randn(2, c, 8, 16) for c in (256, 512, 1024, 2048)]  # in_index=3: res5
    out = head(feats)
    assert out.shape == (2, 19, 8, 16)
    out.square().mean().backward()
    for name in ('theta', 'phi', 'g', 'w1', 'w2', 'norm'):
        assert getattr(block, name).weight.grad.abs().max() > 0, name


@pytest.mark.parametrize('block, error, words', [
    ('SNLBlock', TypeError, 'block must be a config dict'),
    (dict(reduction=2), KeyError, 'has no "type"'),
    (dict(type='NoSuchBlock'), KeyError, 'SNLBlock'),
    (dict(type='SNLBlock', in_channels=64), ValueError, "head's channels=32"),
])
def test_bad_block_config(block, error, words, mmseg):
    with pytest.raises(error, match=words):
        _build(dict(type='snl_mm.NonlocalHead', block=block, **HEAD))


def test_bad_num_convs(mmseg):
    with pytest.raises(ValueError, match='num_convs must be an integer >= 1'):
        _build(dict(type='snl_mm.NonlocalHead', block=dict(type='SNLBlock'), num_convs=0, **HEAD))


def test_without_compiled_mmcv_the_name_resolves_and_explains():
    """Where mmsegmentation cannot load (mmcv-lite: no ``mmcv._ext``), ``import snl_mm`` works and building
    ``snl_mm.NonlocalHead`` raises the ImportError that asks for a compiled mmcv. Run in a fresh interpreter
    in which ``mmcv._ext`` is made unimportable, so that the path is tested also where mmcv is compiled."""
    code = textwrap.dedent('''
        import sys
        sys.modules['mmcv._ext'] = None  # an import of it raises ImportError, as with mmcv-lite
        import snl_mm
        from snl_mm.utils.optional import mmseg_available
        from snl_mm.registry import MODELS
        assert not mmseg_available()
        assert MODELS.get('snl_mm.NonlocalHead') is not None
        try:
            MODELS.build(dict(type='snl_mm.NonlocalHead', block=dict(type='SNLBlock'), in_channels=8,
                              channels=8, num_classes=2))
        except ImportError as e:
            print('IMPORT-ERROR:', e)
        else:
            raise SystemExit('no ImportError')
    ''')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    message = proc.stdout.split('IMPORT-ERROR:', 1)[1]
    assert 'mmcv' in message and 'NonlocalHead' in message
