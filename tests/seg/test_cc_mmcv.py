"""CCBlock against mmcv's compiled-package CrissCrossAttention (2D) and against the definition (3D)."""
import pytest
import torch

from snl_mm.registry import ROOT_MODELS


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _pair(mmcv_ops, channels=32, recurrence=1, seed=0):
    """mmcv's module with random weights (gamma included) and a CCBlock loaded from its state dict."""
    torch.manual_seed(seed)
    ref = mmcv_ops.CrissCrossAttention(channels)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    block = ROOT_MODELS.build(dict(type='CCBlock', in_channels=channels, recurrence=recurrence))
    block.load_state_dict(ref.state_dict(), strict=True)  # keys query_conv, key_conv, value_conv, gamma.scale
    return ref.eval(), block.eval()


@pytest.mark.parametrize('shape', [(2, 32, 7, 9), (1, 32, 1, 5), (1, 32, 12, 3)])
def test_cc_2d_matches_mmcv(shape, mmcv_ops):
    ref, block = _pair(mmcv_ops)
    x = torch.randn(*shape)
    with torch.no_grad():
        assert _rel(block(x), ref(x)) < 1e-5


def test_cc_recurrence_matches_mmcv_applied_twice(mmcv_ops):
    """CCNet's recurrent criss-cross attention: the same module (shared weights) applied R = 2 times."""
    ref, block = _pair(mmcv_ops, recurrence=2)
    x = torch.randn(2, 32, 6, 8)
    with torch.no_grad():
        assert _rel(block(x), ref(ref(x))) < 1e-5


def test_cc_3d_single_frame_is_2d(mmcv_ops):
    """With T = 1 the time line holds only the centre (counted once): the 3D block is mmcv's 2D one."""
    ref, block = _pair(mmcv_ops)
    x = torch.randn(2, 32, 5, 7)
    with torch.no_grad():
        assert _rel(block(x.unsqueeze(2)).squeeze(2), ref(x)) < 1e-5


def _criss_cross_3d_reference(ref, x):
    """The 3D definition with a dense mask: one softmax over the positions that share a row, a column or a
    time line with the query (the centre once), values summed with it; the 1x1 convs of ``ref`` per frame."""
    b, c, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(b * t, c, h, w)

    def tokens(conv):  # (B, N, c') with N ordered (t, h, w)
        y = conv(frames)
        return y.reshape(b, t, -1, h, w).permute(0, 1, 3, 4, 2).reshape(b, t * h * w, -1)

    q, k, v = tokens(ref.query_conv), tokens(ref.key_conv), tokens(ref.value_conv)
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing='ij')
    tt, hh, ww = tt.flatten(), hh.flatten(), ww.flatten()
    same_t, same_h, same_w = (tt[:, None] == tt), (hh[:, None] == hh), (ww[:, None] == ww)
    mask = (same_t & same_h) | (same_t & same_w) | (same_h & same_w)
    energy = (q @ k.transpose(1, 2)).masked_fill(~mask, float('-inf'))
    out = energy.softmax(-1) @ v  # (B, N, C)
    out = out.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
    return ref.gamma(out) + x


@pytest.mark.parametrize('shape', [(2, 32, 3, 5, 4), (1, 32, 4, 1, 6)])
def test_cc_3d_matches_definition(shape, mmcv_ops):
    """The 3D case mmcv lacks: same weights, equal to the masked dense definition; shape kept."""
    ref, block = _pair(mmcv_ops)
    x = torch.randn(*shape)
    with torch.no_grad():
        y = block(x)
        assert y.shape == x.shape
        assert _rel(y, _criss_cross_3d_reference(ref, x)) < 1e-5


def test_cc_3d_trains(mmcv_ops):
    """Gradients reach the projections and gamma in 3D."""
    _, block = _pair(mmcv_ops)
    block.train()
    x = torch.randn(1, 32, 3, 4, 5, requires_grad=True)
    block(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
