"""Interlaced sparse attention (ISA, Huang et al. 2019): softmax attention within groups of positions.

The map is cut into cells of ``down_factor`` positions per axis (``(8, 8)`` in mmsegmentation's ISANet), after
zero padding to whole cells (``pad = ceil(L / l) l - L`` per axis, ``pad // 2`` of it before, as upstream). Two
groupings of the padded grid interlace:

* ``'long'`` (long-range): the positions at the same offset inside their cells, one from every cell:
  ``l_1 ... l_d`` groups of ``g_1 ... g_d`` members (``g = ceil(L / l)`` cells per axis);
* ``'short'`` (short-range): the positions of one cell: ``g_1 ... g_d`` groups of ``l_1 ... l_d`` members.

As a graph over the positions, a grouping is a block-sparse affinity ``A = D^-1 (G . M)`` with ``M = exp(s Q K^T)``
and ``G`` the mask of same-group pairs (block diagonal after the grouping's permutation); ISA applies the
long-range graph and then the short-range one, so every position reaches every other in two steps. A grouping is
computed as one permutation of the map into a batch of groups (:func:`gather_groups`), attention batched over the
groups (:func:`group_matmul`: fused where queries, keys and signals have one width) and the inverse permutation:
memory ``O(N)`` fused, ``O(N n)`` for groups of ``n`` members otherwise, never ``N x N``. The permutations are
defined per axis, for 1D, 2D and 3D maps alike, with no branch on the sizes (a padding of zero is a padding too);
every function that depends on the shape is a ``torch.fx`` leaf. The TorchScript ONNX exporter keeps the map's
sizes dynamic; ``torch.export`` specialises them (the views of ``ceil(L / l)`` cells carry divisibility checks it
cannot discharge for every size, and a map of one cell is a size-one dimension it specialises), so its programs are
dynamic in the batch only.

:class:`InterlacedAffinity` (``type='interlaced'``) is the graph on the positions of a map as given: where the
map does not divide into cells, the padding slots are left out of the groups (masked keys). ISA's own block pads
its input map before projecting it, as mmsegmentation does, so its graph is over the padded grid
(:class:`~snl_mm.blocks.ISABlock`).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .affinity import register_affinity
from .operator import GraphOperator, resolve_scale
from .precision import compute_dtype, float32, no_autocast
from .softmax import softmax_attention

#: the groupings of the padded grid
GROUPINGS = ('long', 'short')


def _factors(factor: Union[int, Sequence[int]], rank: int) -> Tuple[int, ...]:
    return (factor, ) * rank if isinstance(factor, int) else tuple(factor)


def _cells(spatial: Sequence, factors: Sequence[int]) -> List:
    """Cells per axis, ``ceil(L / l)``, as shape arithmetic (symbolic under the tracers)."""
    return [(length + (f - 1)) // f for length, f in zip(spatial, factors)]


@torch.fx.wrap
def pad_to_cells(x: Tensor, factor: Union[int, Sequence[int]]) -> Tensor:
    """Zero-pad the map ``x`` ``(B, C, *S)`` to whole cells: ``(B, C, *S_pad)``, ``S_pad = ceil(S / l) l``,
    ``pad // 2`` before and the rest after on every axis (mmsegmentation's ISA)."""
    spatial = x.shape[2:]
    factors = _factors(factor, len(spatial))
    padding = []
    for length, f, cells in reversed(list(zip(spatial, factors, _cells(spatial, factors)))):
        pad = cells * f - length
        padding += [pad // 2, pad - pad // 2]
    return F.pad(x, padding)


@torch.fx.wrap
def crop_cells(x: Tensor, like: Tensor, factor: Union[int, Sequence[int]]) -> Tensor:
    """The inverse of :func:`pad_to_cells`: the positions of the map ``like`` ``(B, *, *S)`` in the padded map
    ``x`` ``(B, C, *S_pad)``."""
    spatial = like.shape[2:]
    factors = _factors(factor, len(spatial))
    for axis, (length, f, cells) in enumerate(zip(spatial, factors, _cells(spatial, factors))):
        before = (cells * f - length) // 2
        x = x.narrow(2 + axis, before, length)
    return x


def _split_axes(x: Tensor, factors: Sequence[int]) -> Tensor:
    """``(B, C, *S_pad) -> (B, C, g_1, l_1, ..., g_d, l_d)``."""
    shape = [x.shape[0], x.shape[1]]
    for length, f in zip(x.shape[2:], factors):
        shape += [length // f, f]
    return x.reshape(shape)


@torch.fx.wrap
def gather_groups(x: Tensor, factor: Union[int, Sequence[int]], grouping: str) -> Tensor:
    """The padded map ``x`` ``(B, C, *S_pad)`` as a batch of groups ``(B G, C, n, 1)`` (group-major per sample, the
    members in row-major order): for ``'long'`` ``G = prod(l)`` offsets of ``n = prod(g)`` members, for
    ``'short'`` ``G = prod(g)`` cells of ``n = prod(l)`` members."""
    rank = x.dim() - 2
    factors = _factors(factor, rank)
    split = _split_axes(x, factors)
    cells = [2 + 2 * i for i in range(rank)]
    offsets = [3 + 2 * i for i in range(rank)]
    groups, members = (offsets, cells) if grouping == 'long' else (cells, offsets)
    t = split.permute(0, *groups, 1, *members)
    # explicit sizes, no -1: a size inferred by division is a guard torch.export cannot always discharge
    return t.reshape(x.shape[0] * _prod([split.shape[d] for d in groups]), x.shape[1],
                     _prod([split.shape[d] for d in members]), 1)


@torch.fx.wrap
def regroup(t: Tensor, like: Tensor, factor: Union[int, Sequence[int]]) -> Tensor:
    """Long-range groups ``(B prod(l), C, prod(g), 1)`` of the padded map of ``like`` ``(B, *, *S_pad)`` (or of
    ``like``'s map before padding: the cells are the same) as short-range groups ``(B prod(g), C, prod(l), 1)``:
    one permutation, as ISA moves from its first relation to its second."""
    b, c = like.shape[0], t.shape[1]
    rank = like.dim() - 2
    factors = _factors(factor, rank)
    cells = _cells(like.shape[2:], factors)
    view = t.reshape(b, *factors, c, *cells)
    # (B, l..., C, g...) -> (B, g..., C, l...)
    order = [0] + [2 + rank + i for i in range(rank)] + [1 + rank] + [1 + i for i in range(rank)]
    return view.permute(order).reshape(b * _prod(cells), c, _prod(factors), 1)


@torch.fx.wrap
def scatter_groups(t: Tensor, like: Tensor, factor: Union[int, Sequence[int]], grouping: str) -> Tensor:
    """The inverse of :func:`gather_groups`: groups ``(B G, C, n, 1)`` back to the padded map
    ``(B, C, *S_pad)`` of ``like`` ``(B, *, *S)`` (its unpadded or padded map: the cells are the same)."""
    b, c = like.shape[0], t.shape[1]
    rank = like.dim() - 2
    factors = _factors(factor, rank)
    cells = _cells(like.shape[2:], factors)
    lead, trail = (factors, cells) if grouping == 'long' else (cells, factors)
    view = t.reshape(b, *lead, c, *trail)
    # (B, lead..., C, trail...) -> (B, C, g_1, l_1, ..., g_d, l_d)
    cell_axes = [1 + i for i in range(rank)] if grouping == 'short' else [2 + rank + i for i in range(rank)]
    offset_axes = [2 + rank + i for i in range(rank)] if grouping == 'short' else [1 + i for i in range(rank)]
    order = [0, 1 + rank]
    for g_axis, l_axis in zip(cell_axes, offset_axes):
        order += [g_axis, l_axis]
    return view.permute(order).reshape(b, c, *[g * f for g, f in zip(cells, factors)])


def _prod(sizes: Sequence) -> int:
    n = 1
    for s in sizes:
        n = n * s
    return n


@torch.fx.wrap
def group_tokens(z: Tensor, spatial: Sequence[int], factor: Union[int, Sequence[int]], grouping: str) -> Tensor:
    """Signals ``(B, N, c)`` of a map of shape ``spatial`` as the grouping's batch ``(B G, n, c)`` (padding slots
    zero)."""
    m = z.transpose(1, 2).reshape(z.shape[0], z.shape[2], *spatial)
    g = gather_groups(pad_to_cells(m, factor), factor, grouping)
    return g.flatten(2).transpose(1, 2)


@torch.fx.wrap
def ungroup_tokens(t: Tensor, like: Tensor, factor: Union[int, Sequence[int]], grouping: str) -> Tensor:
    """The inverse of :func:`group_tokens`: ``(B G, n, c)`` back to ``(B, N, c)`` on the map of ``like``
    ``(B, *, *S)``, padding slots dropped."""
    m = scatter_groups(t.transpose(1, 2).unsqueeze(-1), like, factor, grouping)
    return crop_cells(m, like, factor).flatten(2).transpose(1, 2)


@torch.fx.wrap
def _shape_probe(z: Tensor, spatial: Sequence[int]) -> Tensor:
    """An empty ``(B, 0, *S)`` map carrying the batch size and spatial shape of signals ``z`` ``(B, N, c)``."""
    return z.new_zeros((z.shape[0], 0, *spatial))


@torch.fx.wrap
def valid_keys(z: Tensor, spatial: Sequence[int], factor: Union[int, Sequence[int]], grouping: str) -> Tensor:
    """``(B G, n)`` boolean: which slots of the grouping's batch hold a position of the map (not padding)."""
    ones = z.new_ones((z.shape[0], 1, *spatial))
    return gather_groups(pad_to_cells(ones, factor), factor, grouping)[:, 0, :, 0] > 0


@torch.fx.wrap
def group_matmul(q: Tensor, k: Tensor, z: Tensor, scale: Union[float, str], mask: Optional[Tensor] = None) -> Tensor:
    """``softmax(s q k^T) z`` within each group of the batches ``(B G, n, c)``, keys ``mask``-ed ``(B G, n)``
    (None: all); a group without keys gives zeros. Returned in the compute dtype of ``z``.

    Queries, keys and signals of one width run through fused attention
    (:func:`~snl_mm.graph.softmax.softmax_attention`, in the compute dtype): no ``n x n`` buffer. Keys narrower
    than the signals (ISA's relations: ``C / 2`` and ``C``) would be padded to the signals' width for the fused
    kernel, every logit computed twice over; there each group's ``n x n`` weights are formed by one batched product
    instead (``O(N n)`` memory for the whole batch, the products of mmsegmentation's relations), logits and softmax
    in float32 and ``P z`` in the compute dtype (``P``'s rows are convex weights: it cannot leave ``z``'s range).
    """
    dtype = compute_dtype(z)
    s = resolve_scale(scale, q.shape[-1])
    with no_autocast(z.device.type):
        if q.shape[-1] == z.shape[-1]:
            return softmax_attention(q.to(dtype), k.to(dtype), z.to(dtype), s, mask=mask)
        q32, k32 = float32(q), float32(k.to(q.dtype))
        logits = torch.baddbmm(q32.new_empty(()), q32, k32.transpose(1, 2), beta=0.0, alpha=s)
        if mask is not None:  # a finite floor: a group without keys gets uniform weights on its zero signals
            logits = logits.masked_fill(~mask[:, None, :], torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1).to(dtype)
        # (P z)^T = z^T P^T: a channel-major result (a view of (B G, c_z, n)), the layout of the convolutions and
        # norms after it
        return torch.bmm(z.to(dtype).transpose(1, 2), weights.transpose(1, 2)).transpose(1, 2)


class GroupAttentionOperator(GraphOperator):
    """Softmax attention within each group of a batch of groups ``(B G, n, c)``: the block-diagonal affinity of a
    grouping, in the groups' coordinates (ISA's relations run on the permuted map).

    Args:
        q (Tensor): queries ``(B G, n, c)``.
        k (Tensor): keys ``(B G, n, c)``.
        scale (float | str): ``s``, or ``'inv_sqrt'`` for ``1 / sqrt(c)``.
    """

    def __init__(self, q: Tensor, k: Tensor, scale: Union[float, str]):
        self.q = q
        self.k = k
        self.scale = scale

    def matmul(self, z: Tensor) -> Tensor:
        return group_matmul(self.q, self.k, z, self.scale)

    def dense(self) -> Tensor:
        """Each group's ``(n, n)`` weights, ``(B G, n, n)`` float32 (at least)."""
        q, k = float32(self.q), float32(self.k)
        with no_autocast(q.device.type):
            return torch.softmax(resolve_scale(self.scale, q.shape[-1]) * torch.bmm(q, k.transpose(1, 2)), dim=-1)


class InterlacedOperator(GraphOperator):
    """The block-sparse softmax affinity of one grouping of a map's positions.

    Args:
        q (Tensor): queries ``(B, N, c)`` of a map of shape ``spatial``.
        k (Tensor): keys ``(B, N, c)`` of the same map.
        spatial (sequence[int]): the map's spatial shape.
        factor (int | sequence[int]): the cell size per axis.
        grouping (str): ``'long'`` or ``'short'``.
        scale (float | str): ``s``, or ``'inv_sqrt'`` for ``1 / sqrt(c)``.
    """

    def __init__(self, q: Tensor, k: Tensor, spatial: Sequence[int], factor: Union[int, Sequence[int]],
                 grouping: str, scale: Union[float, str]):
        self.spatial = spatial
        self.factor = factor
        self.grouping = grouping
        self.scale = scale
        self.like = _shape_probe(k, spatial)
        self.q = group_tokens(q, spatial, factor, grouping)
        self.k = group_tokens(k, spatial, factor, grouping)
        self.mask = valid_keys(k, spatial, factor, grouping)

    def matmul(self, z: Tensor) -> Tensor:
        """``A z`` for signals ``(B, N, c)``: grouped, attended within groups, put back."""
        grouped = group_matmul(self.q, self.k, group_tokens(z, self.spatial, self.factor, self.grouping),
                               self.scale, self.mask)
        return ungroup_tokens(grouped, self.like, self.factor, self.grouping)

    def dense(self) -> Tensor:
        """``A`` ``(B, N, N)`` float32 (at least), zero outside the groups, for analysis."""
        with no_autocast(self.q.device.type):
            q, k = float32(self.q), float32(self.k)
            logits = resolve_scale(self.scale, q.shape[-1]) * torch.bmm(q, k.transpose(1, 2))
            logits = logits.masked_fill(~self.mask[:, None, :], float('-inf'))
            weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # (B G, n, n)
            n = _prod(self.spatial)
            eye = torch.eye(n, dtype=q.dtype, device=q.device).expand(self.like.shape[0], n, n)
            # A e_j for every position j: the grouped weights applied to the identity's columns
            columns = group_tokens(eye, self.spatial, self.factor, self.grouping)  # (B G, n, N)
            return ungroup_tokens(torch.bmm(weights, columns), self.like, self.factor, self.grouping)


@register_affinity('interlaced')
class InterlacedAffinity:
    """The block-sparse softmax affinity of ISA's long-range or short-range grouping.

    Args:
        down_factor (int | sequence[int]): the cell size per axis (an int: on every axis). Default: 8
            (mmsegmentation's ``(8, 8)`` in 2D).
        grouping (str): ``'long'`` (positions at one offset in every cell) or ``'short'`` (one cell).
        scale (float | str): ``s``; ``'inv_sqrt'`` (default) for ``1 / sqrt(c)``.

    Call: ``affinity(q, k, spatial)`` with queries and keys ``(B, N, c)`` of one map of shape ``spatial`` returns an
    :class:`InterlacedOperator`.
    """

    def __init__(self, down_factor: Union[int, Sequence[int]] = 8, grouping: str = 'long',
                 scale: Union[float, str] = 'inv_sqrt'):
        self.down_factor = check_down_factor(down_factor, 'InterlacedAffinity')
        if grouping not in GROUPINGS:
            raise ValueError(f'InterlacedAffinity: grouping must be one of {GROUPINGS}, got {grouping!r}')
        if not (scale == 'inv_sqrt' or (isinstance(scale, (int, float)) and not isinstance(scale, bool))):
            raise TypeError(f"InterlacedAffinity: scale must be a number or 'inv_sqrt', got {scale!r}")
        self.grouping = grouping
        self.scale = scale

    def __repr__(self) -> str:
        return (f'InterlacedAffinity(down_factor={self.down_factor}, grouping={self.grouping!r}, '
                f'scale={self.scale!r})')

    @property
    def notation(self) -> str:
        """``D^-1 (G . M)``: the softmax kernel masked to same-group pairs (``G_l`` long-range, ``G_s`` short)."""
        g = 'G_l' if self.grouping == 'long' else 'G_s'
        return f'D_({g}.M)^-1 ({g}.M)'

    def __call__(self, q: Tensor, k: Tensor, spatial: Sequence[int]) -> InterlacedOperator:
        if not is_fx_symbolic_tracing():
            if q.dim() != 3 or q.shape != k.shape:
                raise ValueError(f'InterlacedAffinity expects q and k (B, N, c) of one map, got {tuple(q.shape)} '
                                 f'and {tuple(k.shape)}')
            if spatial is None or _prod(tuple(spatial)) != k.shape[1]:
                raise ValueError(f'InterlacedAffinity groups the positions of a map: spatial must be its shape '
                                 f'(product N = {k.shape[1]}), got {spatial!r}')
            check_rank(self.down_factor, len(spatial), 'InterlacedAffinity')
        return InterlacedOperator(q, k, spatial, self.down_factor, self.grouping, self.scale)


def check_down_factor(down_factor, owner: str) -> Union[int, Tuple[int, ...]]:
    """``down_factor`` as an int or a tuple of 1 to 3 positive ints; a ValueError naming ``owner`` otherwise."""
    def positive(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if positive(down_factor):
        return down_factor
    if isinstance(down_factor, (tuple, list)) and 1 <= len(down_factor) <= 3 and all(map(positive, down_factor)):
        return tuple(down_factor)
    raise ValueError(f'{owner}: down_factor must be a positive int (the cell size on every axis) or one per axis '
                     f'such as (8, 8), got {down_factor!r}')


def check_rank(down_factor, rank: int, owner: str) -> None:
    """A per-axis ``down_factor`` must have one entry per spatial axis of the input."""
    if isinstance(down_factor, tuple) and len(down_factor) != rank:
        raise ValueError(f'{owner}: down_factor={down_factor} gives a cell size for {len(down_factor)} axes, the '
                         f'input has {rank} spatial axes; give one per axis or an int for all')
