"""Backbones with blocks inserted by ``plugins=`` trace as whole models: ``torch.fx.symbolic_trace``,
``torch.export`` and ONNX (TorchScript exporter, run by onnxruntime) give the eager outputs, with blocks that are not
the identity, in the three layouts: a map (ResNet-50), frames (TSM-R50), tokens (ViT-B/16).

mmpretrain's ViT itself does not trace with torch.fx's default tracer (mmcv's ``AdaptivePadding`` and
``resize_pos_embed`` branch on shapes): its tracer wraps those two upstream pieces, and the plain ViT traces with it
too; everything the package inserts is traced through.
"""
import pytest
import torch
import torch.fx
from mmcv.cnn.bricks.transformer import AdaptivePadding
from mmengine.registry import MODELS
from mmpretrain.models import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed

from snl_mm.blocks import find_blocks
from tests.helpers import random_input, randomise_norms_

SNL = dict(type='SNLBlock', inner_channels=16)
RES4 = dict(cfg=SNL, stages=(False, False, True, False), blocks=(-2, ))
MODELS_ = {
    'resnet50-map': (dict(type='mmpretrain.ResNet', depth=50, plugins=[RES4]), (1, 3, 64, 64)),
    'tsm-r50-frames': (dict(type='mmaction.ResNetTSM', depth=50, num_segments=8, pretrained=None, pretrained2d=False,
                            plugins=[RES4]), (8, 3, 64, 64)),
    'vit-b16-tokens': (dict(type='mmpretrain.VisionTransformer', arch='b', img_size=64, patch_size=16,
                            plugins=[dict(cfg=SNL, after='layers.5')]), (1, 3, 64, 64)),
}


class UpstreamTracer(torch.fx.Tracer):
    """torch.fx's tracer, with the two upstream pieces that branch on shapes kept as calls."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=(resize_pos_embed, ))

    def is_leaf_module(self, m: torch.nn.Module, name: str) -> bool:
        return isinstance(m, AdaptivePadding) or super().is_leaf_module(m, name)


def _fx(model, x):
    if not isinstance(model, VisionTransformer):
        return torch.fx.symbolic_trace(model)(x)
    plain = VisionTransformer(arch='b', img_size=64, patch_size=16)
    plain.eval()
    torch.fx.GraphModule(plain, UpstreamTracer().trace(plain))  # upstream's own model traces with this tracer
    return torch.fx.GraphModule(model, UpstreamTracer().trace(model))(x)


def _export(model, x):
    return torch.export.export(model, (x, ), strict=False).module()(x)


def _onnx(model, x, tmp_path):
    import onnxruntime
    path = str(tmp_path / 'model.onnx')
    torch.onnx.export(model, (x, ), path, dynamo=False)
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return [torch.from_numpy(y) for y in session.run(None, {session.get_inputs()[0].name: x.numpy()})]


@pytest.fixture(scope='module', params=list(MODELS_))
def model_input(request):
    """The backbone with one block whose norm is random (not the identity), its input and its eager outputs."""
    cfg, shape = MODELS_[request.param]
    model = MODELS.build(cfg)
    (block, ) = find_blocks(model).values()
    randomise_norms_(block, seed=1)
    model.eval()
    x = random_input(shape)
    seen = []
    handle = block.register_forward_hook(lambda m, args, out: seen.append(not torch.allclose(out, args[0])))
    with torch.no_grad():
        eager = model(x)
    handle.remove()
    assert seen == [True]  # the block ran once and changed what it saw
    return model, x, list(eager) if isinstance(eager, (tuple, list)) else [eager]


@pytest.mark.parametrize('how', ['fx', 'export', 'onnx'])
def test_traced_model_gives_the_eager_outputs(how, model_input, tmp_path):
    model, x, eager = model_input
    with torch.no_grad():
        traced = _onnx(model, x, tmp_path) if how == 'onnx' else (_fx if how == 'fx' else _export)(model, x)
    traced = list(traced) if isinstance(traced, (tuple, list)) else [traced]
    assert len(traced) == len(eager)
    for a, b in zip(traced, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fx_keeps_a_block_hooked_on_a_torch_module():
    """torch.fx records torch.nn modules as leaves without their hooks: a block at ``after_conv1`` (the input of
    ``conv2``, an ``nn.Conv2d``) must be in the traced graph all the same."""
    model = MODELS.build(dict(type='mmpretrain.ResNet', depth=18, num_stages=1, strides=(1, ), dilations=(1, ),
                              out_indices=(0, ), plugins=[dict(cfg=SNL, blocks=(0, ), position='after_conv1')]))
    randomise_norms_(model, seed=2)
    model.eval()
    x = random_input((1, 3, 32, 32))
    graph = torch.fx.symbolic_trace(model)
    assert any('snl_block' in str(node.target) for node in graph.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(graph(x)[0], model(x)[0], rtol=1e-5, atol=1e-5)
