"""Attention maps: the right block's input is caught, rows of its affinity are drawn, a PNG is written."""
import matplotlib.image as mpimg
import pytest
import torch

from snl_mm.analysis.attention import (attention_maps, plot_attention_maps, record_input, select_block,
                                       to_feature_index)
from snl_mm.blocks import find_blocks
from snl_mm.registry import MODELS

SNL_AT_STAGE1 = [dict(cfg=dict(type='SNLBlock'), stages=(True, False, False), position='after_block', blocks=(1, ))]


def preresnet(plugins=None):
    torch.manual_seed(0)
    model = MODELS.build(dict(type='snl_mm.PreResNet', depth=20, plugins=plugins))
    model.eval()
    return model


def test_find_and_select_blocks():
    model = preresnet(SNL_AT_STAGE1 + [dict(cfg=dict(type='NLBlock'), stages=(False, True, False),
                                            position='after_block', blocks=(0, ))])
    blocks = find_blocks(model)
    assert [type(b).__name__ for b in blocks.values()] == ['SNLBlock', 'NLBlock']
    name, block = select_block(model)
    assert name == next(iter(blocks)) and block is blocks[name]
    other = list(blocks)[1]
    assert select_block(model, other)[1] is blocks[other]
    with pytest.raises(KeyError, match='valid'):
        select_block(model, 'layer9.0.block')
    with pytest.raises(KeyError, match='no block'):
        select_block(preresnet())


def test_maps_are_rows_of_the_affinity_of_the_block_input():
    model = preresnet(SNL_AT_STAGE1)
    _, block = select_block(model)
    # a trained-like block: the affinity does not depend on the norm, but make the output non-trivial too
    torch.nn.init.normal_(block.norm.weight)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), record_input(block) as caught:
        model(images)
    assert len(caught) == 1 and caught[0].shape == (2, 16, 32, 32)
    x = caught[0]
    # the caught tensor is what the block received: the output of the second residual block of stage 1,
    # computed here by the plain backbone with the same weights
    plain = preresnet()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all('snl_block' in k for k in unexpected)
    with torch.no_grad():
        expected = plain.layer1[1](plain.layer1[0](plain.conv1(images)))
    torch.testing.assert_close(x, expected)

    queries = [[0, 5 * 32 + 7], [1023, 16 * 32 + 16]]
    maps = attention_maps(block, x, queries)
    assert maps.shape == (2, 2, 32, 32)
    with torch.no_grad():
        affinity = block.affinity(x)
    for b, qs in enumerate(queries):
        for q, index in enumerate(qs):
            torch.testing.assert_close(maps[b, q].flatten(), affinity[b, index].float())
    # no hook is left behind
    with torch.no_grad(), record_input(block) as again:
        pass
    model(images)
    assert again == []


def test_feature_index_and_errors():
    assert to_feature_index((0, 0), (32, 32), (8, 8)) == 0
    assert to_feature_index((31, 31), (32, 32), (8, 8)) == 63
    assert to_feature_index((9, 20), (32, 32), (8, 8)) == 2 * 8 + 5
    with pytest.raises(ValueError, match='outside'):
        to_feature_index((32, 0), (32, 32), (8, 8))
    block = select_block(preresnet(SNL_AT_STAGE1))[1]
    with pytest.raises(ValueError, match='2D'):
        attention_maps(block, torch.randn(1, 16, 8), [[0]])
    with pytest.raises(ValueError, match='one coordinate per axis'):
        to_feature_index((1, 2), (4, 32, 32), (2, 8, 8))
    # a clip: (frame, row, col) -> (t * h + r) * w + c on the feature grid
    assert to_feature_index((5, 9, 20), (8, 32, 32), (4, 8, 8)) == (2 * 8 + 2) * 8 + 5
    with pytest.raises(ValueError, match='same number'):
        attention_maps(block, torch.randn(2, 16, 4, 4), [[0], [1, 2]])


def test_plot_draws_a_paper_figure(tmp_path, monkeypatch):
    """Perceptual colour map, one colour bar per row with its label, queries titled (row, col), vector files."""
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, 'close', lambda fig=None: figures.append(fig))
    images = [torch.randint(0, 255, (32, 32, 3), dtype=torch.uint8).numpy() for _ in range(2)]
    maps = torch.rand(2, 3, 8, 8)
    points = [[(1, 2), (30.4, 30), (16, 5)], [(4, 4), (20, 10), (0, 31)]]
    written = plot_attention_maps(images, maps, points, str(tmp_path / 'attn.png'),
                                  ['label same / pred same', 'label different / pred same'], 'layer1.1.snl_block')
    assert [p.rsplit('.', 1)[1] for p in written] == ['png', 'pdf', 'svg']
    png = mpimg.imread(written[0])
    assert png.ndim == 3 and png.shape[0] > 200 and png.shape[1] > 300
    assert (tmp_path / 'attn.svg').read_text().count('<svg') == 1 and (tmp_path / 'attn.pdf').stat().st_size > 1000

    (fig, ) = figures
    bars = [ax for ax in fig.axes if ax.get_label() == '<colorbar>']
    assert len(bars) == 2 and all(bar.get_ylabel() == 'attention weight' for bar in bars)
    panels = [ax for ax in fig.axes if ax.get_label() != '<colorbar>']
    titles = [ax.get_title() for ax in panels]
    assert titles[:4] == ['label same / pred same', 'query 1 (1, 2)', 'query 2 (30, 30)', 'query 3 (16, 5)']
    scalar = [im for ax in panels for im in ax.get_images() if im.get_array().ndim == 2]
    heat = [im for im in scalar if im.get_cmap().name == 'viridis']
    assert len(heat) == 6 and {im.get_cmap().name for im in scalar} == {'viridis', 'gray'}
    # one scale per row: from 0 to the row's largest weight
    assert heat[0].get_clim() == (0, pytest.approx(float(maps[0].max())))
    # each query is marked on the input, numbered
    assert [t.get_text() for t in panels[0].texts] == ['1', '2', '3']
