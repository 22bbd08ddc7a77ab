"""snl_mm.DAHead and snl_mm.EMAHead: an mmsegmentation ``DAHead`` / ``EMAHead`` checkpoint (random weights, saved to a
file) loads strictly through mmengine's ``load_checkpoint`` and gives the same logits (eval; DAHead's three training
outputs; EMAHead's moving average in training)."""
import pytest
import torch

from tests.helpers import rel_err
from tests.seg.heads import upstream_and_loaded

NORM = dict(type='BN', requires_grad=True)
HEADS = {
    'DAHead': dict(in_channels=32, in_index=0, channels=16, pam_channels=4, dropout_ratio=0.1, num_classes=5,
                   norm_cfg=NORM, align_corners=False),
    'EMAHead': dict(in_channels=32, in_index=0, channels=8, ema_channels=16, num_bases=6, num_stages=3, momentum=0.2,
                    dropout_ratio=0.1, num_classes=5, norm_cfg=NORM, align_corners=False),
}


def _heads(name, tmp_path):
    return upstream_and_loaded(name, HEADS[name], tmp_path)


def _inputs(seed=1):
    return [torch.relu(torch.randn(2, 32, 9, 13, generator=torch.Generator().manual_seed(seed)))]


@pytest.mark.parametrize('name', sorted(HEADS))
def test_upstream_checkpoint_loads_and_gives_the_same_logits(name, mmseg, tmp_path):
    upstream, ours = _heads(name, tmp_path)
    upstream.eval(), ours.eval()
    inputs = _inputs()
    with torch.no_grad():
        expected, got = upstream(inputs), ours(inputs)
    if name == 'DAHead':
        assert len(got) == len(expected) == 3
        for a, b in zip(got, expected):
            assert rel_err(a, b) < 1e-5
        metas = [dict(img_shape=(9, 13), ori_shape=(9, 13), pad_shape=(9, 13))] * 2
        with torch.no_grad():
            assert rel_err(ours.predict(inputs, metas, None)[0], upstream.predict(inputs, metas, None)[0]) < 1e-5
    else:
        assert rel_err(got, expected) < 1e-5
    # the package's blocks are there, in their upstream-equal form
    if name == 'DAHead':
        assert type(ours.pam).__name__ == 'PAMBlock' and type(ours.cam).__name__ == 'CAMBlock'
    else:
        assert type(ours.ema_block).__name__ == 'EMABlock' and ours.ema_block.fusion == 'residual_relu'
        assert 'ema_block.ema_module.bases' in ours.state_dict() and 'ema_module.bases' in upstream.state_dict()


def test_da_head_training_outputs_and_loss(mmseg, tmp_path):
    """In training ``forward`` returns the three logits (PAM + CAM, PAM, CAM), as upstream; the same losses."""
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    upstream, ours = _heads('DAHead', tmp_path)
    upstream.train(), ours.train()
    inputs = _inputs(2)
    torch.manual_seed(5)
    expected = upstream(inputs)
    torch.manual_seed(5)  # the same dropout masks
    got = ours(inputs)
    for a, b in zip(got, expected):
        assert rel_err(a, b) < 1e-5
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 5, (1, 9, 13))),
                           metainfo=dict(img_shape=(9, 13), ori_shape=(9, 13), pad_shape=(9, 13)))
    losses, losses_ref = ours.loss_by_feat(got, [sample] * 2), upstream.loss_by_feat(expected, [sample] * 2)
    assert sorted(losses) == sorted(losses_ref) and 'pam_cam.loss_ce' in losses
    for key in losses:
        assert rel_err(losses[key], losses_ref[key]) < 1e-5, key


def test_ema_head_training_step_moves_the_bases_as_upstream(mmseg, tmp_path):
    upstream, ours = _heads('EMAHead', tmp_path)
    upstream.train(), ours.train()
    inputs = _inputs(3)
    torch.manual_seed(6)
    expected = upstream(inputs)
    torch.manual_seed(6)
    got = ours(inputs)
    assert rel_err(got, expected) < 1e-5
    assert rel_err(ours.ema_block.ema_module.bases, upstream.ema_module.bases) < 1e-6
    for key, value in upstream.state_dict().items():
        moved = key.split('.')[0] in ('ema_mid_conv', 'ema_module', 'ema_out_conv')
        mine = ours.state_dict()[f'ema_block.{key}' if moved else key]
        assert torch.equal(mine, value) or rel_err(mine.float(), value.float()) < 1e-5, key


@pytest.mark.parametrize('name', sorted(HEADS))
def test_initialisation_is_upstream(name, mmseg):
    """``init_weights`` gives the blocks upstream's start (PAM/CAM gammas zero; EMA's output norm weight 1), not the
    identity of an inserted block."""
    from snl_mm.registry import MODELS
    head = MODELS.build(dict(type=f'snl_mm.{name}', **HEADS[name]))
    head.init_weights()
    if name == 'DAHead':
        assert head.pam.gamma.scale.item() == 0 and head.cam.gamma.scale.item() == 0
        assert head.pam.value_project.weight.std() > 0.05  # PyTorch's default, not N(0, 0.01)
    else:
        assert torch.equal(head.ema_block.ema_out_conv.bn.weight, torch.ones(16))
