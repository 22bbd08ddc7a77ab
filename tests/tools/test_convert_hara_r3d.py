"""tools/convert_hara_r3d.py: a checkpoint of Hara et al.'s 3D ResNet-50 (kenshohara/3D-ResNets-PyTorch layout and
keys) loads strictly into the network the UCF-101 configs build with mmaction2's ResNet3d, and computes the same
features, checked against an independent float64 reference of Hara's network written from its description."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from tests.helpers import randomise_, rel_err

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs/ucf101/r3d50_k400-pretrained_8xb8-16x1x1-100e_ucf101-split1-rgb.py'


def load_tool():
    spec = importlib.util.spec_from_file_location('snl_mm_tools_convert_hara_r3d', REPO / 'tools/convert_hara_r3d.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class HaraBottleneck(nn.Module):
    """relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x)); 1x1x1, 3x3x3 (stride), 1x1x1."""

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv3d(cin, planes, 1, bias=False), nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3, self.bn3 = nn.Conv3d(planes, 4 * planes, 1, bias=False), nn.BatchNorm3d(4 * planes)
        self.downsample = None
        if stride != 1 or cin != 4 * planes:  # shortcut type B: a projection where the shape changes
            self.downsample = nn.Sequential(nn.Conv3d(cin, 4 * planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm3d(4 * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class HaraResNet50(nn.Module):
    """7x7x7 stem (stride 1, 2, 2), max-pool of stride 2, four stages of (3, 4, 6, 3) bottlenecks, the last three
    striding by 2 in time and space; average pooling and a 400-class layer."""

    def __init__(self, pool_kernel=(3, 3, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(pool_kernel, stride=2, padding=tuple(k // 2 for k in pool_kernel))
        cin = 64
        for i, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))):
            units = [HaraBottleneck(cin, planes, stride)]
            units += [HaraBottleneck(4 * planes, planes, 1) for _ in range(blocks - 1)]
            setattr(self, f'layer{i + 1}', nn.Sequential(*units))
            cin = 4 * planes
        self.fc = nn.Linear(2048, 400)

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_recognizer():
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.cls_head.num_classes = 400  # the Kinetics head the checkpoint has
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def hara_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    ref = randomise_(HaraResNet50().double(), std=0.05, seed=7)
    path = tmp_path_factory.mktemp('hara') / 'resnet-50-kinetics.pth'
    # as Hara's training script saves it: DataParallel's `module.` prefix, with its options beside
    state = {f'module.{k}': v for k, v in ref.state_dict().items()}
    torch.save({'epoch': 200, 'arch': 'resnet-50', 'state_dict': state, 'optimizer': {}}, path)
    return ref, path


def test_converted_checkpoint_loads_strictly_and_computes_hara_features(hara_checkpoint, tmp_path, monkeypatch):
    ref, src = hara_checkpoint
    dst = tmp_path / 'r3d50.pth'
    tool = load_tool()
    monkeypatch.setattr(sys, 'argv', ['convert_hara_r3d.py', str(src), str(dst)])
    tool.main()
    converted = torch.load(dst, map_location='cpu', weights_only=True)
    assert converted['meta']['arch'] == 'resnet-50'

    model = build_recognizer().double()
    model.load_state_dict(converted['state_dict'], strict=True)  # every key, every shape
    model.eval()
    ref.eval()
    x = torch.randn(1, 3, 8, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ours = model.backbone(x)
        # mmaction2's stem pool takes 1x3x3 windows (stride 2, 2, 2); with that pool Hara's network is the same
        ref.maxpool = nn.MaxPool3d((1, 3, 3), stride=2, padding=(0, 1, 1))
        err = rel_err(ours, ref.features(x))
        # Hara's own 3x3x3 pool: the one difference, a different function of the same weights
        ref.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        hara = ref.features(x)
    assert ours.shape == hara.shape == (1, 2048, 1, 1, 1)
    assert err < 1e-12, err
    assert rel_err(ours, hara) > 1e-3
    torch.testing.assert_close(model.cls_head.fc_cls.weight, ref.fc.weight, rtol=0, atol=0)


def test_unknown_layout_is_refused():
    tool = load_tool()
    with pytest.raises(KeyError, match=r"no mmaction2 key for \['layer1.0.conv1.0.weight'\]"):
        tool.convert_state_dict({'conv1.weight': torch.zeros(1), 'layer1.0.conv1.0.weight': torch.zeros(1)})
