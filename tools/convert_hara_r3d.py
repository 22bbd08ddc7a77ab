"""Convert a 3D ResNet checkpoint of Hara et al. 2018 (kenshohara/3D-ResNets-PyTorch) to mmaction2's keys.

The UCF-101 configs ``configs/ucf101/r3d50*`` build Hara's ResNet-50 with mmaction2's ``ResNet3d`` and start from
a Kinetics checkpoint of it (the paper: "The weights are initialized by the pre-trained I3D model on Kinetics
dataset"). Hara's checkpoints name the layers as torchvision's 2D ResNet does; this tool renames them to the
``Recognizer3D`` keys, tensor for tensor (no value changes)::

    python tools/convert_hara_r3d.py resnet-50-kinetics.pth checkpoints/r3d50_hara_kinetics400.pth

================================  ==============================================
Hara (``module.`` prefix dropped)  mmaction2 ``Recognizer3D``
================================  ==============================================
``conv1.weight``, ``bn1.*``        ``backbone.conv1.conv.weight``, ``backbone.conv1.bn.*``
``layerI.J.convK.weight``          ``backbone.layerI.J.convK.conv.weight``
``layerI.J.bnK.*``                 ``backbone.layerI.J.convK.bn.*``
``layerI.J.downsample.0.weight``   ``backbone.layerI.J.downsample.conv.weight``
``layerI.J.downsample.1.*``        ``backbone.layerI.J.downsample.bn.*``
``fc.weight``, ``fc.bias``         ``cls_head.fc_cls.weight``, ``cls_head.fc_cls.bias``
================================  ==============================================
"""
import argparse
import re
from collections import OrderedDict
from typing import Dict

import torch
from torch import Tensor

_RULES = [
    (re.compile(r'^conv1\.weight$'), 'backbone.conv1.conv.weight'),
    (re.compile(r'^bn1\.(\w+)$'), r'backbone.conv1.bn.\1'),
    (re.compile(r'^(layer\d+\.\d+)\.conv(\d)\.weight$'), r'backbone.\1.conv\2.conv.weight'),
    (re.compile(r'^(layer\d+\.\d+)\.bn(\d)\.(\w+)$'), r'backbone.\1.conv\2.bn.\3'),
    (re.compile(r'^(layer\d+\.\d+)\.downsample\.0\.weight$'), r'backbone.\1.downsample.conv.weight'),
    (re.compile(r'^(layer\d+\.\d+)\.downsample\.1\.(\w+)$'), r'backbone.\1.downsample.bn.\2'),
    (re.compile(r'^fc\.(weight|bias)$'), r'cls_head.fc_cls.\1'),
]


def convert_state_dict(state: Dict[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Hara's keys (with or without DataParallel's ``module.`` prefix) -> mmaction2's ``Recognizer3D`` keys.

    Raises:
        KeyError: a key no rule maps (a ResNet of another layout, e.g. Hara's shortcut type A, or a WideResNet or
            ResNeXt), naming the keys.
    """
    out, unknown = OrderedDict(), []
    for key, value in state.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        for pattern, target in _RULES:
            if pattern.match(key):
                out[pattern.sub(target, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f'convert_hara_r3d: no mmaction2 key for {unknown[:8]}{" ..." if len(unknown) > 8 else ""}; '
                       'this tool converts the ResNets of kenshohara/3D-ResNets-PyTorch with projection '
                       'shortcuts (shortcut type B)')
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help="Hara's checkpoint (e.g. resnet-50-kinetics.pth)")
    parser.add_argument('dst', help='the mmaction2 checkpoint to write')
    args = parser.parse_args()
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=True)
    state = checkpoint.get('state_dict', checkpoint)
    converted = convert_state_dict(state)
    meta = dict(source=args.src, arch=checkpoint.get('arch'), epoch=checkpoint.get('epoch'))
    torch.save(dict(meta=meta, state_dict=converted), args.dst)
    print(f'{len(converted)} tensors written to {args.dst}')


if __name__ == '__main__':
    main()
