"""Attention maps of a trained nonlocal block (the paper's Fig. 3 B), drawn as PNG.

A block's affinity ``A`` (``block.affinity(x)``, a dense ``(B, N, N)`` matrix) says, row by row, how much
each position takes from every other one. For a query position ``i`` the map is row ``i`` of ``A``
reshaped to the feature map. The block's input ``x`` is caught by a forward pre-hook while the whole model
runs, so the maps are those of the trained network on real inputs, whatever backbone holds the block.
"""
import math
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

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


def to_feature_index(point: Sequence[float], image_shape: Sequence[int], feature_shape: Sequence[int]) -> int:
    """Flat index of the feature-map position that covers a point of the input.

    Args:
        point (sequence): ``(row, col)`` in image pixels, or ``(frame, row, col)`` for a clip.
        image_shape (Sequence[int]): ``(H, W)`` (or ``(T, H, W)``) of the input given to the model.
        feature_shape (Sequence[int]): ``(h, w)`` (or ``(t, h, w)``) of the block's input.

    Returns:
        int: the row-major index of the feature position covering the point (``r * w + c``, ``(f * h + r) * w + c``).
    """
    if not len(point) == len(image_shape) == len(feature_shape):
        raise ValueError(f'query point {tuple(point)} does not match the input {tuple(image_shape)} and the '
                         f'feature map {tuple(feature_shape)}: give one coordinate per axis')
    if not all(0 <= p < size for p, size in zip(point, image_shape)):
        raise ValueError(f'query point {tuple(point)} lies outside the image of shape {tuple(image_shape)}')
    index = 0
    for p, size, feature in zip(point, image_shape, feature_shape):
        index = index * feature + min(int(p * feature / size), feature - 1)
    return index


@torch.no_grad()
def attention_maps(block: nn.Module, x: Tensor, queries: Sequence[Sequence[int]]) -> Tensor:
    """Rows of the block's affinity for query positions, as maps over the feature grid.

    Args:
        block (nn.Module): a block with ``affinity(x) -> (B, N, N)``.
        x (Tensor): the block's input ``(B, C, h, w)`` or, for a video block, ``(B, C, t, h, w)``.
        queries (Sequence[Sequence[int]]): per sample, flat query indices into the ``N`` positions.

    Returns:
        Tensor: ``(B, Q, h, w)`` (or ``(B, Q, t, h, w)``) float32 maps, ``Q`` queries per sample.
    """
    if x.dim() not in (4, 5):
        raise ValueError(f'attention maps are drawn for 2D feature maps (B, C, H, W) and clips (B, C, T, H, W); '
                         f'the block input has shape {tuple(x.shape)}')
    if len(queries) != x.shape[0] or len({len(q) for q in queries}) != 1:
        raise ValueError(f'queries must give the same number of positions for each of the {x.shape[0]} '
                         f'samples, got {[len(q) for q in queries]}')
    grid = x.shape[2:]
    n = math.prod(grid)
    affinity = block.affinity(x).float()
    if affinity.shape != (x.shape[0], n, n):
        raise ValueError(f'{type(block).__name__}.affinity returned shape {tuple(affinity.shape)}; attention '
                         f'maps need the position affinity (B, N, N) with N = {n}')
    index = torch.as_tensor(queries, dtype=torch.long, device=affinity.device)
    rows = torch.gather(affinity, 1, index[..., None].expand(-1, -1, n))
    return rows.reshape(x.shape[0], -1, *grid).cpu()


def _row_scale(maps: Tensor) -> float:
    """The top of a shared colour scale: the largest value of the maps (1 when they are all zero)."""
    top = float(maps.max()) if maps.numel() else 0.
    return top if top > 0 else 1.


def plot_attention_maps(images: Sequence[np.ndarray],
                        maps: Tensor,
                        points: Sequence[Sequence[Point]],
                        out_file: str,
                        titles: Optional[Sequence[str]] = None,
                        block_name: str = '') -> List[str]:
    """Draw each image with its numbered query points and one heat map per query; write PNG, PDF and SVG.

    Each row (one image) shares one colour scale, shown by a colour bar; query points are written
    ``(row, col)`` in pixels of the network input (:func:`snl_mm.analysis.style.format_point`).

    Args:
        images (Sequence[np.ndarray]): ``B`` RGB images ``(H, W, 3)`` (uint8 or floats in [0, 1]), as the network
            sees them.
        maps (Tensor): ``(B, Q, h, w)`` attention maps (:func:`attention_maps`).
        points (Sequence[Sequence[tuple]]): per image, the ``Q`` query points ``(row, col)`` in pixels.
        out_file (str): the PNG to write (PDF and SVG beside it).
        titles (Sequence[str], optional): one title per image (e.g. label and prediction).
        block_name (str): shown in the figure title.

    Returns:
        list[str]: the written files, the PNG first.
    """
    from .style import (SEQUENTIAL_CMAP, add_colorbar, fit_title, format_point, mark_query, paper_style, pyplot,
                        save_figure)
    plt = pyplot()
    num_images, num_queries = maps.shape[:2]
    with paper_style():
        fig, axes = plt.subplots(num_images, num_queries + 1, squeeze=False, layout='constrained',
                                 figsize=(1.75 * (num_queries + 1) + 0.5, 1.9 * num_images + 0.4))
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            extent = (-0.5, width - 0.5, height - 0.5, -0.5)
            grey = np.asarray(image, dtype=float).mean(-1)
            axes[i, 0].imshow(image, interpolation='nearest')
            axes[i, 0].set_title(fit_title(titles[i] if titles else 'input', 22))
            top = _row_scale(maps[i])
            for q, (row, col) in enumerate(points[i]):
                mark_query(axes[i, 0], row, col, q)
                ax = axes[i, q + 1]
                ax.imshow(grey, cmap='gray', interpolation='nearest')
                heat = ax.imshow(maps[i, q].numpy(), cmap=SEQUENTIAL_CMAP, alpha=0.75, extent=extent,
                                 interpolation='nearest', vmin=0, vmax=top)
                mark_query(ax, row, col, q, label=False)
                ax.set_title(f'query {q + 1} {format_point(row, col)}')
            for ax in axes[i]:
                ax.set_xticks([])
                ax.set_yticks([])
            add_colorbar(fig, list(axes[i, 1:]), heat, 'attention weight')
        fig.suptitle(fit_title(f'attention of {block_name}: query i takes A_ij from position j; points (row, col) '
                               'in input pixels' if block_name else 'attention', 25 * (num_queries + 1)))
        written = save_figure(fig, out_file)
        plt.close(fig)
    return written


def video_strip_size(num_rows: int, num_steps: int) -> Tuple[float, float]:
    """``(width, height)`` in inches of the figure :func:`plot_video_attention` draws."""
    return 1.2 * (num_steps + 1) + 0.9, 1.35 * num_rows + 0.6


#: resolution of the video strips (their pixel size is :func:`video_strip_size` times this)
VIDEO_DPI = 100


def plot_video_attention(clips: Sequence[np.ndarray],
                         maps: Tensor,
                         points: Sequence[Sequence[Tuple[float, float, float]]],
                         out_file: str,
                         titles: Optional[Sequence[str]] = None,
                         block_name: str = '') -> List[str]:
    """A strip of frames per query of a clip: the query's attention over every time step of the block's feature
    map, drawn over the input frame of that time; PNG, PDF and SVG.

    One row per (clip, query): the first panel is the query's own frame with the query marked, then one panel per
    time step ``t`` of the feature map (the input frame at the middle of the step underneath). A row shares one
    colour scale (its colour bar), so the panels show how the query's attention is spread over time. The PNG is
    exactly :func:`video_strip_size` times :data:`VIDEO_DPI` pixels.

    Args:
        clips (Sequence[np.ndarray]): ``B`` clips ``(T, H, W, 3)`` as the network sees them.
        maps (Tensor): ``(B, Q, t, h, w)`` attention maps (:func:`attention_maps` on a 3D block input).
        points (Sequence[Sequence[tuple]]): per clip, the ``Q`` query points ``(frame, row, col)`` in the input.
        out_file (str): the PNG to write (PDF and SVG beside it).
        titles (Sequence[str], optional): one title per clip.
        block_name (str): shown in the figure title.

    Returns:
        list[str]: the written files, the PNG first.
    """
    from .style import (SEQUENTIAL_CMAP, add_colorbar, fit_title, format_point, mark_query, paper_style, pyplot,
                        save_figure)
    plt = pyplot()
    num_clips, num_queries, steps = maps.shape[:3]
    rows = [(i, q) for i in range(num_clips) for q in range(num_queries)]
    with paper_style():
        fig, axes = plt.subplots(len(rows), steps + 1, squeeze=False, figsize=video_strip_size(len(rows), steps),
                                 layout='constrained')
        for r, (i, q) in enumerate(rows):
            clip = clips[i]
            frames, height, width = clip.shape[:3]
            extent = (-0.5, width - 0.5, height - 0.5, -0.5)
            frame, row, col = points[i][q]
            head = axes[r, 0]
            head.imshow(clip[int(frame)], interpolation='nearest')
            mark_query(head, row, col, q)
            head.set_title(fit_title(f'{titles[i] if titles else f"clip {i}"}: query {q + 1}, frame {int(frame)} '
                                     f'{format_point(row, col)}', 24), fontsize=6)
            top = _row_scale(maps[i, q])
            for t in range(steps):
                ax = axes[r, t + 1]
                shown = min(int((t + 0.5) * frames / steps), frames - 1)
                ax.imshow(np.asarray(clip[shown], dtype=float).mean(-1), cmap='gray', interpolation='nearest')
                heat = ax.imshow(maps[i, q, t].numpy(), cmap=SEQUENTIAL_CMAP, alpha=0.75, extent=extent,
                                 interpolation='nearest', vmin=0, vmax=top)
                if int(frame * steps / frames) == t:
                    mark_query(ax, row, col, q, label=False)
                ax.set_title(f't = {t} (frame {shown})', fontsize=6)
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
            add_colorbar(fig, list(axes[r, 1:]), heat, 'attention', shrink=1.0)
        fig.suptitle(fit_title(f'attention of {block_name} over time; points (frame, row, col)' if block_name
                               else 'attention over time', 18 * (steps + 1)))
        written = save_figure(fig, out_file, dpi=VIDEO_DPI, tight=False)
        plt.close(fig)
    return written
