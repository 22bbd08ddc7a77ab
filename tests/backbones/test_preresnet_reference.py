"""PreResNet in the layout of the spectral paper's code (the network behind its CIFAR numbers), against an
independent float64 reference of that network written from its description: pre-activation bottlenecks whose
projection is a 1x1 convolution and a BN on the unit's raw input; after the last stage BN-ReLU, a 1x1 convolution
(no bias), BN-ReLU, global average pooling, dropout 0.5 and one linear layer."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import init_default_scope

from snl_mm.backbones import GlobalAveragePoolingDropout, PreResNet
from tests.helpers import randomise_, rel_err

NUM_CLASSES = 100


class RefUnit(nn.Module):
    """``x + conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x)))))))))``, projection ``bn(conv(x))`` on ``x``."""

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = 4 * planes
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(planes), nn.Conv2d(planes, cout, 1, bias=False)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (x if self.proj is None else self.proj(x))


class RefPreResNet56(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        stages, cin = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            units = [RefUnit(cin, planes, stride)] + [RefUnit(4 * planes, planes, 1) for _ in range(8)]
            stages.append(nn.Sequential(*units))
            cin = 4 * planes
        self.stages = nn.Sequential(*stages)
        self.bn1, self.fc1, self.bn2 = nn.BatchNorm2d(256), nn.Conv2d(256, 256, 1, bias=False), nn.BatchNorm2d(256)
        self.fc2 = nn.Linear(256, NUM_CLASSES)

    def forward(self, x):
        x = self.stages(self.conv(x))
        x = F.relu(self.bn2(self.fc1(F.relu(self.bn1(x)))))
        x = F.dropout(x.mean(dim=(2, 3)), 0.5, self.training)
        return self.fc2(x)


def classifier(**backbone):
    from mmpretrain.registry import MODELS

    init_default_scope('mmpretrain')
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='snl_mm.PreResNet', depth=56, **backbone),
        neck=dict(type='snl_mm.GlobalAveragePoolingDropout', dropout=0.5),
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=256,
                  loss=dict(type='CrossEntropyLoss'))))


def copy_by_order(src: nn.Module, dst: nn.Module) -> int:
    """Copy ``src``'s state into ``dst``, entry by entry in registration order (shapes and kinds must agree)."""
    src_items, dst_items = list(src.state_dict().items()), list(dst.state_dict().items())
    assert len(src_items) == len(dst_items), (len(src_items), len(dst_items))
    state = {}
    for (ks, vs), (kd, vd) in zip(src_items, dst_items):
        assert vs.shape == vd.shape and ks.rsplit('.', 1)[-1] == kd.rsplit('.', 1)[-1], (ks, kd)
        state[kd] = vs
    dst.load_state_dict(state)
    return len(state)


def test_reference_layout_equals_the_papers_network():
    model = classifier(projection='conv_bn', final_conv=True).double()
    ref = randomise_(RefPreResNet56().double(), std=0.1, seed=3)
    copied = copy_by_order(ref, model)
    assert copied == len(ref.state_dict()) > 300
    model.eval()
    ref.eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        err = rel_err(model(x, mode='tensor'), ref(x))
    assert err < 1e-12, err

    # the default layout (He et al. 2016) is a different network on the same weights
    default = classifier().double()
    assert len(default.state_dict()) < len(model.state_dict())  # no projection norms, no final conv
    assert all(not isinstance(m.downsample, nn.Sequential)
               for m in default.backbone.modules() if hasattr(m, 'preact_shortcut'))


def test_projection_and_final_conv_are_checked_and_named():
    with pytest.raises(ValueError, match=r"invalid projection 'bn'; valid: \('preact', 'conv_bn'\)"):
        PreResNet(depth=20, projection='bn')
    net = PreResNet(depth=20, projection='conv_bn', final_conv=True, frozen_stages=3)
    assert isinstance(net.layer2[0].downsample, nn.Sequential) and not net.layer2[0].preact_shortcut
    assert net.final_conv.kernel_size == (1, 1) and net.final_conv.bias is None
    assert not any(p.requires_grad for p in net.final_conv.parameters())  # frozen with the last stage


def test_dropout_neck():
    neck = GlobalAveragePoolingDropout(dropout=0.5)
    x = torch.rand(4, 512, 3, 5) + 0.5
    pooled = x.flatten(2).mean(2)
    neck.eval()
    assert torch.equal(neck((x, ))[0], pooled) and torch.equal(neck(x), pooled)
    neck.train()
    torch.manual_seed(0)
    out = neck(x)
    dropped = (out == 0).float().mean().item()
    assert 0.45 < dropped < 0.55, dropped
    kept = out != 0
    torch.testing.assert_close(out[kept], 2 * pooled[kept])  # inverted dropout scales the survivors
    for bad in (1.0, -0.1, True, '0.5'):
        with pytest.raises(ValueError, match='dropout must be a probability in'):
            GlobalAveragePoolingDropout(dropout=bad)
