"""snl_mm.ANNHead and snl_mm.ISAHead: an mmsegmentation ``ANNHead`` / ``ISAHead`` checkpoint (random weights, saved to
a file) loads strictly through mmengine's ``load_checkpoint`` into the package's head, built from the package's
blocks, and gives the same logits (eval, and training with the same dropout masks)."""
import pytest
import torch

from tests.helpers import rel_err
from tests.seg.heads import upstream_and_loaded

NORM = dict(type='BN', requires_grad=True)
HEADS = {
    'ANNHead': dict(in_channels=[12, 32], in_index=[0, 1], channels=16, project_channels=8, query_scales=(1, ),
                    key_pool_scales=(1, 3, 6, 8), dropout_ratio=0.1, num_classes=5, norm_cfg=NORM,
                    align_corners=False),
    'ISAHead': dict(in_channels=32, in_index=1, channels=16, isa_channels=8, down_factor=(8, 8), dropout_ratio=0.1,
                    num_classes=5, norm_cfg=NORM, align_corners=False),
}
#: the maps the heads read: 11 x 21 is no multiple of ISA's 8 x 8 cells (padded as upstream)
SHAPES = ((2, 12, 11, 21), (2, 32, 11, 21))


def _heads(name, tmp_path):
    return upstream_and_loaded(name, HEADS[name], tmp_path)


def _inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.relu(torch.randn(*shape, generator=gen)) for shape in SHAPES]


@pytest.mark.parametrize('name', sorted(HEADS))
def test_upstream_checkpoint_loads_and_gives_the_same_logits(name, mmseg, tmp_path):
    upstream, ours = _heads(name, tmp_path)
    inputs = _inputs()
    for training in (False, True):
        upstream.train(training), ours.train(training)
        torch.manual_seed(5)
        expected = upstream(inputs)
        torch.manual_seed(5)  # the same dropout masks
        got = ours(inputs)
        assert got.shape == (2, 5, 11, 21)
        assert rel_err(got, expected) < 1e-5, training
    # the package's blocks, in mmsegmentation's concat form
    if name == 'ANNHead':
        assert type(ours.fusion).__name__ == 'AFNBBlock' and type(ours.context).__name__ == 'APNBBlock'
        assert ours.fusion.fusion == ours.context.fusion == 'concat'
        assert ours.fusion.context_channels == 12 and ours.fusion.in_channels == 32
    else:
        assert type(ours.isa_block).__name__ == 'ISABlock' and ours.isa_block.fusion == 'concat'


def test_isa_head_keys_and_a_checkpoint_that_does_not_match(mmseg, tmp_path):
    """The package's own ISAHead checkpoint round-trips; upstream's keys are moved under ``isa_block.``; a checkpoint
    of another head fails the strict load instead of leaving the block as built."""
    from mmengine.runner import load_checkpoint

    from snl_mm.registry import MODELS
    upstream, ours = _heads('ISAHead', tmp_path)
    assert all(k.startswith(('in_conv.', 'isa_block.', 'conv_seg.')) for k in ours.state_dict())
    fresh = MODELS.build(dict(type='snl_mm.ISAHead', **HEADS['ISAHead']))
    fresh.load_state_dict(ours.state_dict(), strict=True)
    for key, value in upstream.state_dict().items():
        moved = key if key.startswith(('in_conv.', 'conv_seg.')) else f'isa_block.{key}'
        assert torch.equal(fresh.state_dict()[moved], value), key
    ann, _ = _heads('ANNHead', tmp_path)
    path = tmp_path / 'ann.pth'
    torch.save(dict(state_dict=ann.state_dict()), path)
    with pytest.raises(RuntimeError, match='unexpected key|missing keys'):
        load_checkpoint(fresh, str(path), map_location='cpu', strict=True)


def test_ann_head_refuses_one_input(mmseg):
    from snl_mm.registry import MODELS
    with pytest.raises(ValueError, match='ANNHead: in_channels must give the low-level and the high-level map'):
        MODELS.build(dict(type='snl_mm.ANNHead', **dict(HEADS['ANNHead'], in_channels=[12, 32, 8], in_index=[0, 1, 2])))
