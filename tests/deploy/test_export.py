"""Deployment of every block of the catalogue, and of a ResNet-50 with an SNL block inserted by ``plugins=``:
``torch.export`` in eval mode (parameters requiring grad, as a trained model has them), ONNX by both exporters
(dynamo, from the exported program, and TorchScript) with dynamic batch and spatial axes, run in onnxruntime on
the export shape and on another one, equal to eager within 1e-4."""
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.blocks.variants import BLOCKS, C, build, generator
from tests.helpers import rel_err

onnxruntime = pytest.importorskip('onnxruntime')  # a test dependency (setup.cfg's tests extra)

#: the export shape and a second shape with another batch size, height and width
SHAPES = ((2, C, 6, 8), (3, C, 9, 5))
TOLERANCE = 1e-4


def _run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _check_onnx(path: Path, model: torch.nn.Module, inputs) -> None:
    for x in inputs:
        with torch.no_grad():
            expected = model(x)
        expected = (expected[-1] if isinstance(expected, tuple) else expected).numpy()
        got = _run_onnx(path, x)
        assert got.shape == expected.shape
        err = np.abs(got - expected).max()
        assert err <= TOLERANCE * max(1.0, np.abs(expected).max()), (tuple(x.shape), err)


def _inputs():
    return [torch.randn(*shape, generator=generator(30 + i)) for i, shape in enumerate(SHAPES)]


def _dynamic_shapes(batch_only: bool = False):
    dims = dict(batch=torch.export.Dim('batch', min=1, max=64), height=torch.export.Dim('height', min=2, max=512),
                width=torch.export.Dim('width', min=2, max=512))
    if batch_only:
        return ({0: dims['batch']}, )
    return ({0: dims['batch'], 2: dims['height'], 3: dims['width']}, )


#: blocks that torch.export traces for one map size (dynamic batch): ISA's groups are views of ``ceil(L / l)`` cells
#: of ``l`` positions per axis, whose reshapes torch.export cannot discharge for every size (it specialises a map of
#: one cell and the divisibility checks of the views). Their TorchScript ONNX export is dynamic in H and W as well.
STATIC_MAP_EXPORT = {'ISABlock'}


@pytest.mark.parametrize('name', BLOCKS)
def test_torch_export_and_onnx_dynamo(name, tmp_path):
    block = build(name).eval()
    assert any(p.requires_grad for p in block.parameters())  # trainable as built (EMA's mid convolution is frozen)
    inputs = _inputs()
    static_map = name in STATIC_MAP_EXPORT
    if static_map:  # another batch size on the export's map
        inputs[1] = torch.randn(SHAPES[1][:2] + SHAPES[0][2:], generator=generator(31))
    program = torch.export.export(block, (inputs[0], ), dynamic_shapes=_dynamic_shapes(batch_only=static_map))
    for x in inputs:
        with torch.no_grad():
            assert rel_err(program.module()(x), block(x)) < 1e-6
    path = tmp_path / f'{name}.onnx'
    torch.onnx.export(program, (inputs[0], ), str(path), dynamo=True)
    _check_onnx(path, block, inputs)


@pytest.mark.parametrize('name', BLOCKS)
def test_onnx_torchscript(name, tmp_path):
    block = build(name).eval()
    inputs = _inputs()
    path = tmp_path / f'{name}.onnx'
    axes = {0: 'batch', 2: 'height', 3: 'width'}
    torch.onnx.export(block, (inputs[0], ), str(path), dynamo=False, input_names=['x'], output_names=['y'],
                      dynamic_axes=dict(x=axes, y=axes))
    _check_onnx(path, block, inputs)


@pytest.mark.parametrize('dynamo', [True, False], ids=['dynamo', 'torchscript'])
def test_resnet50_with_snl_block(dynamo, tmp_path):
    """mmpretrain's ResNet-50 with an SNL block before the last residual block of res4 (``plugins=``), its block
    given random weights (not the identity of a fresh build)."""
    from mmpretrain.registry import MODELS

    from snl_mm.blocks import SNLBlock, find_blocks
    from tests.helpers import randomise_
    model = MODELS.build(dict(type='snl_mm.ResNet', depth=50, plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(False, False, True, False), position='after_block', blocks=(-2, ))]))
    blocks = find_blocks(model)
    assert list(blocks) == ['layer3.4.snl_block'] and isinstance(blocks['layer3.4.snl_block'], SNLBlock)
    randomise_(blocks['layer3.4.snl_block'], std=0.02)
    model.eval()
    x = torch.randn(1, 3, 64, 64, generator=generator(40))
    path = tmp_path / 'resnet50_snl.onnx'
    torch.onnx.export(model, (x, ), str(path), dynamo=dynamo, input_names=['x'])
    _check_onnx(path, model, [x])
