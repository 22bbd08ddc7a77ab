"""Blocks in transformer backbones: after a layer (tokens seen as the patch grid, class token kept apart) and in
place of a layer's attention (the VTN experiment of the paper's Appendix C.1)."""
import pytest
import torch
from mmengine.registry import MODELS, init_default_scope

from snl_mm.blocks import find_blocks
from tests.helpers import random_input, randomise_norms_

SNL = dict(type='SNLBlock', inner_channels=8)
VIT = dict(type='mmpretrain.VisionTransformer', arch='deit-tiny', img_size=64, patch_size=16, out_type='raw',
           out_indices=(5, ), final_norm=False)


def _seen(model):
    (path, block), = find_blocks(model).items()
    seen = []
    block.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    return block, seen


def test_vit_layer_sees_the_patch_grid_and_keeps_the_class_token():
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(VIT, plugins=[dict(cfg=SNL, after='layers.5')]))
    plain = MODELS.build(VIT)
    plain.load_state_dict(model.state_dict(), strict=False)
    block, seen = _seen(model)
    randomise_norms_(block, seed=1)  # a block that changes the patch tokens
    model.eval()
    plain.eval()
    x = random_input((2, 3, 64, 64))
    with torch.no_grad():
        (out, ), (ref, ) = model(x), plain(x)
    assert seen == [(2, 192, 4, 4)]
    assert torch.equal(out[:, 0], ref[:, 0])  # the class token is not a position of the grid
    assert not torch.equal(out[:, 1:], ref[:, 1:])


def test_vit_attention_replaced_by_a_block():
    """The ViT layer adds its attention's output to its input: the block's update replaces the attention."""
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(VIT, plugins=[dict(cfg=SNL, replace='layers.3.attn')]))
    assert model.plugin_paths == ['layers.3.attn.snl_block']
    assert 'layers.3.attn.qkv.weight' not in model.state_dict()
    block, seen = _seen(model)
    randomise_norms_(block, seed=2)
    layer = model.layers[3]
    x = random_input((2, 1 + 16, 192))
    model.eval()
    with torch.no_grad():
        model(random_input((1, 3, 64, 64)))  # the layout reads the patch grid (4 x 4) off the model's forward
        y = layer(x)
        normed = layer.ln1(x)
        grid = normed[:, 1:].reshape(2, 4, 4, 192).permute(0, 3, 1, 2)
        update = (block(grid) - grid).permute(0, 2, 3, 1).reshape(2, 16, 192)
        expected = x + torch.cat([torch.zeros_like(update[:, :1]), update], dim=1)
        torch.testing.assert_close(y, layer.ffn(layer.ln2(expected), identity=expected))
    assert seen[-1] == (2, 192, 4, 4)


def test_swin_block_and_window_attention():
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(type='mmpretrain.SwinTransformer', arch='tiny', img_size=224, plugins=[
        dict(cfg=SNL, after='stages.1.blocks.1'), dict(cfg=dict(SNL, postfix=2), replace='stages.2.blocks.0.attn')]))
    assert model.plugin_paths == ['stages.1.blocks.1.snl_block', 'stages.2.blocks.0.attn.snl_block2']
    model.eval()
    seen = []
    for block in find_blocks(model).values():
        block.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        outs = model(random_input((1, 3, 224, 224)))
    assert seen == [(1, 192, 28, 28), (1, 384, 14, 14)] and outs[-1].shape == (1, 768, 7, 7)


@pytest.mark.parametrize('entry, expected', [
    (dict(cfg=SNL, after='transformer_layers.layers.1'), (1, 96, 2, 4, 4)),
    (dict(cfg=SNL, replace='transformer_layers.layers.1.attentions.1'), (1, 96, 2, 4, 4)),
])
def test_timesformer(entry, expected):
    """Divided space-time attention: a block after a layer or in place of its spatial attention (which adds its
    own input: the block replaces it as a whole) sees the (T, H, W) grid of the patch tokens."""
    init_default_scope('mmaction')
    cfg = dict(type='TimeSformer', num_frames=2, img_size=64, patch_size=16, embed_dims=96, num_heads=4,
               num_transformer_layers=2, attention_type='divided_space_time', pretrained=None)
    model = MODELS.build(dict(cfg, plugins=[entry]))
    block, seen = _seen(model)
    model.eval()
    with torch.no_grad():
        out = model(random_input((1, 3, 2, 64, 64)))
    assert seen == [expected] and out.shape == (1, 96)


def test_uniformer_attention_replaced():
    init_default_scope('mmaction')
    cfg = dict(type='UniFormer', depth=[1, 1, 2, 1], embed_dim=[16, 32, 64, 128], head_dim=16, img_size=64,
               pretrained2d=False)
    model = MODELS.build(dict(cfg, plugins=[dict(cfg=SNL, replace='blocks3.1.attn'),
                                            dict(cfg=dict(SNL, postfix=2), after='blocks4.0')]))
    model.eval()
    seen = []
    for block in find_blocks(model).values():
        block.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(random_input((1, 3, 8, 64, 64)))
    assert seen == [(1, 64, 4, 4, 4), (1, 128, 4, 2, 2)]  # the stem halves T: 8 -> 4


def test_tokens_without_a_declared_layout_are_refused():
    """A transformer the package has no adapter for: its (B, L, C) tokens are not guessed to be a map."""
    init_default_scope('mmpretrain')
    with pytest.raises(ValueError, match=r"plugins\[0\]: at the output of xca_layers.1 the value is "
                                         r'Tensor\(1, \d+, 96\), not a 2-D or 3-D map'):
        MODELS.build(dict(type='mmpretrain.XCiT', embed_dims=96, depth=2, num_heads=4, cls_attn_layers=1,
                          patch_size=8, img_size=64, plugins=[dict(cfg=SNL, after='xca_layers.1')]))
