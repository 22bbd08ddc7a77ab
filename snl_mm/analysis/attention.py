"""Attention maps of a trained nonlocal block (the paper's Fig. 3 B), drawn as PNG.

A block's affinity ``A`` (``block.affinity(x)``, a dense ``(B, N, N)`` matrix) says, row by row, how much
each position takes from every other one. For a query position ``i`` the map is row ``i`` of ``A``
reshaped to the feature map. The block's input ``x`` is caught by a forward pre-hook while the whole model
runs, so the maps are those of the trained network on real inputs, whatever backbone holds the block.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from snl_mm.blocks import BLOCK_NAMES, find_blocks

Point = Tuple[float, float]


def select_block(model: nn.Module, name: Optional[str] = None) -> Tuple[str, nn.Module]:
    """The block called ``name`` in ``model``, or its only/first block when ``name`` is None.

    Raises:
        KeyError: no block in the model, or ``name`` is not one of them (the message lists them).
    """
    blocks = find_blocks(model)
    if not blocks:
        raise KeyError(f'the model holds no block of this package (one of {BLOCK_NAMES}, or another NonlocalBase)')
    if name is None:
        name = next(iter(blocks))
    if name not in blocks:
        raise KeyError(f'block {name!r} is not in the model; valid: {list(blocks)}')
    return name, blocks[name]


@contextmanager
def record_input(block: nn.Module) -> Iterator[List[Tensor]]:
    """Catch the input of every call of ``block`` while the context is open.

    Yields:
        list[Tensor]: filled with the first positional argument of each call, detached.
    """
    inputs: List[Tensor] = []

    def hook(module: nn.Module, args: tuple) -> None:
        inputs.append(args[0].detach())

    handle = block.register_forward_pre_hook(hook)
    try:
        yield inputs
    finally:
        handle.remove()


def to_feature_index(point: Point, image_shape: Sequence[int], feature_shape: Sequence[int]) -> int:
    """Flat index of the feature-map position that covers an image pixel.

    Args:
        point (tuple): ``(row, col)`` in image pixels.
        image_shape (Sequence[int]): ``(H, W)`` of the image given to the model.
        feature_shape (Sequence[int]): ``(h, w)`` of the block's input.

    Returns:
        int: ``r * w + c`` of the feature position covering the pixel.
    """
    (height, width), (h, w) = image_shape, feature_shape
    row, col = point
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f'query point {point} lies outside the image of shape {tuple(image_shape)}')
    r = min(int(row * h / height), h - 1)
    c = min(int(col * w / width), w - 1)
    return r * w + c


@torch.no_grad()
def attention_maps(block: nn.Module, x: Tensor, queries: Sequence[Sequence[int]]) -> Tensor:
    """Rows of the block's affinity for query positions, as maps over the feature grid.

    Args:
        block (nn.Module): a block with ``affinity(x) -> (B, N, N)``.
        x (Tensor): the block's input ``(B, C, h, w)``.
        queries (Sequence[Sequence[int]]): per sample, flat query indices into the ``h * w`` grid.

    Returns:
        Tensor: ``(B, Q, h, w)`` float32 maps, ``Q`` queries per sample (the same count for every sample).
    """
    if x.dim() != 4:
        raise ValueError(f'attention maps are drawn for 2D feature maps (B, C, H, W); the block input has '
                         f'shape {tuple(x.shape)}')
    if len(queries) != x.shape[0] or len({len(q) for q in queries}) != 1:
        raise ValueError(f'queries must give the same number of positions for each of the {x.shape[0]} '
                         f'samples, got {[len(q) for q in queries]}')
    h, w = x.shape[-2:]
    affinity = block.affinity(x).float()
    if affinity.shape != (x.shape[0], h * w, h * w):
        raise ValueError(f'{type(block).__name__}.affinity returned shape {tuple(affinity.shape)}; attention '
                         f'maps need the position affinity (B, N, N) with N = {h * w}')
    index = torch.as_tensor(queries, dtype=torch.long, device=affinity.device)
    rows = torch.gather(affinity, 1, index[..., None].expand(-1, -1, h * w))
    return rows.reshape(x.shape[0], -1, h, w).cpu()


def plot_attention_maps(images: Sequence[np.ndarray],
                        maps: Tensor,
                        points: Sequence[Sequence[Point]],
                        out_file: str,
                        titles: Optional[Sequence[str]] = None,
                        block_name: str = '') -> str:
    """Draw each image with its query points and one heat map per query, and save a PNG.

    Args:
        images (Sequence[np.ndarray]): ``B`` RGB images ``(H, W, 3)`` (uint8 or floats in [0, 1]).
        maps (Tensor): ``(B, Q, h, w)`` attention maps (:func:`attention_maps`).
        points (Sequence[Sequence[tuple]]): per image, the ``Q`` query points ``(row, col)`` in pixels.
        out_file (str): path of the PNG to write.
        titles (Sequence[str], optional): one title per image (e.g. label and prediction).
        block_name (str): shown in the figure title.

    Returns:
        str: ``out_file``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    num_images, num_queries = maps.shape[:2]
    colors = ('#ff4fa3', '#ff9f1a', '#37d67a', '#2ccce4', '#f47373')
    fig, axes = plt.subplots(num_images, num_queries + 1, squeeze=False,
                             figsize=(2.4 * (num_queries + 1), 2.4 * num_images))
    for i, image in enumerate(images):
        height, width = image.shape[:2]
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)
        axes[i, 0].imshow(image, interpolation='nearest')
        axes[i, 0].set_title(titles[i] if titles else 'input', fontsize=8)
        for q, (row, col) in enumerate(points[i]):
            color = colors[q % len(colors)]
            axes[i, 0].scatter([col], [row], s=40, c=color, edgecolors='white', linewidths=0.8)
            ax = axes[i, q + 1]
            ax.imshow(image, interpolation='nearest', alpha=0.45)
            ax.imshow(maps[i, q].numpy(), cmap='jet', alpha=0.55, extent=extent, interpolation='bilinear')
            ax.scatter([col], [row], s=40, c=color, edgecolors='white', linewidths=0.8)
            ax.set_title(f'query {q + 1} ({row:g}, {col:g})', fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f'attention of {block_name}' if block_name else 'attention', fontsize=9)
    fig.tight_layout()
    fig.savefig(out_file, dpi=110)
    plt.close(fig)
    return out_file
