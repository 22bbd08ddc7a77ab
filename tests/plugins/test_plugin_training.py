"""Training behaviour with blocks inside: with_cp, frozen_stages, norm_eval, out_indices."""
import copy

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from snl_mm.backbones import ResNet, ResNet3d

ENTRIES = [
    dict(cfg=dict(type='SNLBlock'), stages=(False, True), blocks=(0, ), position='after_conv2'),
    dict(cfg=dict(type='NLBlock'), stages=(False, True), blocks=(1, ), position='after_conv3'),
    dict(cfg=dict(type='SNLBlock', postfix=2), stages=(False, True), blocks=(-1, ), position='after_block'),
]


def small_resnet50(**kwargs) -> ResNet:
    return ResNet(depth=50, num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(0, 1), **kwargs)


def _set_with_cp(model: nn.Module, value: bool) -> None:
    for m in model.modules():
        if hasattr(m, 'with_cp'):
            m.with_cp = value


def test_with_cp_trains_one_step_with_blocks_inside(randomise_norms_):
    model = small_resnet50(with_cp=True, plugins=ENTRIES)
    model.init_weights()
    randomise_norms_(model, seed=0)  # non-identity blocks: every block parameter gets a gradient
    assert model.layer2[0].with_cp
    twin = copy.deepcopy(model)
    _set_with_cp(twin, False)
    model.train()
    twin.train()

    x = torch.randn(2, 3, 32, 32)
    grads = []
    for net in (model, twin):
        net.zero_grad()
        sum(o.square().mean() for o in net(x)).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    # checkpointing recomputes the residual blocks, plugin hooks included: same gradients as without it
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)
    for path in model.plugin_paths:
        block_grads = [grads[0][f'{path}.{n}'] for n, _ in model.get_submodule(path).named_parameters()]
        assert all(torch.count_nonzero(g) > 0 for g in block_grads), path

    # one SGD step changes the blocks' weights
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {p: v.detach().clone() for p, v in model.get_submodule(model.plugin_paths[0]).named_parameters()}
    model.zero_grad()
    sum(o.square().mean() for o in model(x)).backward()
    optimizer.step()
    after = dict(model.get_submodule(model.plugin_paths[0]).named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in before)


def test_with_cp_resnet3d_after_conv_position(randomise_norms_):
    """mmaction2's Bottleneck3d under checkpointing, with a block inside its residual branch."""
    kwargs = dict(depth=50, pretrained=None, num_stages=1, out_indices=(0, ), spatial_strides=(1, ),
                  temporal_strides=(1, ), dilations=(1, ), conv_cfg=dict(type='Conv3d'),
                  plugins=[dict(cfg=dict(type='NLBlock'), blocks=(1, ), position='after_conv2')])
    model = ResNet3d(with_cp=True, **kwargs)
    model.init_weights()
    randomise_norms_(model, seed=1)
    twin = ResNet3d(with_cp=False, **kwargs)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 4, 16, 16)
    grads = []
    for net in (model, twin):
        net.train()
        net(x).square().mean().backward()
        grads.append(net.layer1[1].nl_block.conv_out.conv.weight.grad)
    assert torch.count_nonzero(grads[0]) > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_frozen_stages_freeze_their_blocks():
    model = ResNet(depth=18, frozen_stages=2, plugins=[
        dict(cfg=dict(type='SNLBlock'), blocks=(0, ), position='after_conv1')])
    model.init_weights()
    model.train()
    for i, path in enumerate(model.plugin_paths):
        block = model.get_submodule(path)
        frozen = i < 2  # stages 1 and 2 (layer1, layer2)
        assert all(p.requires_grad != frozen for p in block.parameters()), path
        assert block.training != frozen, path
        assert all(m.training != frozen for m in block.modules()), path


def test_norm_eval_covers_the_blocks():
    model = ResNet(depth=18, norm_eval=True, plugins=[dict(cfg=dict(type='SNLBlock'), blocks=(-1, ))])
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    block_norms = [m for path in model.plugin_paths for m in model.get_submodule(path).modules()
                   if isinstance(m, _BatchNorm)]
    assert block_norms and all(not m.training for m in norms)
    # the blocks' other layers train; their norms keep running statistics, as mmdetection's plugins
    x = torch.randn(2, 3, 32, 32)
    running = [m.running_mean.clone() for m in block_norms]
    model(x)
    assert all(torch.equal(r, m.running_mean) for r, m in zip(running, block_norms))
    assert model.get_submodule(model.plugin_paths[0]).training


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (2, ), (1, 3)])
def test_out_indices(out_indices):
    model = ResNet(depth=18, out_indices=out_indices, plugins=[
        dict(cfg=dict(type='SNLBlock'), stages=(True, True, True, False), blocks=(-1, ))])
    model.init_weights()
    model.eval()
    plain = ResNet(depth=18, out_indices=out_indices)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if 'snl_block' not in k})
    plain.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs, ref = model(x), plain(x)
    assert len(outs) == len(out_indices)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref))
