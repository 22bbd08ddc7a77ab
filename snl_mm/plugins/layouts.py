"""How a block sees the data at the place it is inserted: the layout of the feature map there.

A nonlocal block relates the positions of a map ``(B, C, *S)``. Backbones hand their data around in other
forms, and the block must see the positions it is meant to relate, never a reinterpretation of them:

=============  ===================================================  ==============================================
layout         the value at the site                                what the block sees
=============  ===================================================  ==============================================
``map``        ``(B, C, H, W)`` or ``(B, C, T, H, W)``              the map itself
``map1d``      ``(B, C, L)``                                        the 1-D map itself (never guessed)
``channels_   ``(B, *S, C)`` (SAM's ViT, Video Swin)                  the map ``(B, C, *S)`` (never guessed)
last``
``frames``     ``(N * T, C, H, W)``: a video with time folded into  the clip ``(N, C, T, H, W)``; ``T`` fixed, the
               the batch (TSM, TSN, TIN, TANet...)                  backbone's ``num_segments``, or the recogniser's
                                                                    input (``(N, M, C, H, W)``: ``T = M``)
``tokens``     ``(B, L, C)``: extra tokens (class, distillation)    the patch grid ``(B, C, *grid)``; extra tokens
               then the patch tokens (a ViT, Swin, TimeSformer)     pass unchanged
=============  ===================================================  ==============================================

A layout may also pick one element of a tuple output (``index``): Swin's stages return ``(tokens, hw_shape)``.
A tokens layout reads its grid from a fixed shape, from the hooked module's inputs or outputs (Swin's blocks get
``hw_shape`` as their second argument), or from another module's output earlier in the same forward
(:class:`Capture`: a ViT's ``patch_embed`` returns the patch resolution).
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

#: what puts the block's output back into the form of the value at the site
Restore = Callable[[Tensor], Any]

#: batch sizes of the build-time checks running now (a stack: checks do not nest, but stay safe if they do)
_PROBING: List[int] = []


def probing_batch() -> Optional[int]:
    """The batch size of the build-time check running now, or None outside one."""
    return _PROBING[-1] if _PROBING else None


@contextlib.contextmanager
def probing(batch: int) -> Iterator[None]:
    """While the build-time check runs (and reads what it saw): its input is one clip of ``batch`` frames for the
    frames layouts whose clip length a recogniser gives at run time."""
    _PROBING.append(batch)
    try:
        yield
    finally:
        _PROBING.pop()

LAYOUT_TYPES = ('map', 'map1d', 'channels_last', 'frames', 'tokens')


@dataclass
class Capture:
    """A value recorded from a module's output in each forward (e.g. a ViT's patch resolution).

    Args:
        path (str): the module whose output is recorded, relative to the backbone (``''``: the backbone).
        index (int | str, optional): the element of a tuple output to keep; ``'grid'``: the spatial shape ``S``
            of a map output ``(B, C, *S)``; ``'batch'``: the batch size of the module's input (recorded before
            it runs); the whole output when None.
    """

    path: str
    index: Union[None, int, str] = None

    def __post_init__(self) -> None:
        self.value: Any = None

    @property
    def before(self) -> bool:
        """Whether the value is read from the module's input, before it runs (a forward pre-hook)."""
        return self.index == 'batch'

    def __call__(self, module: nn.Module, args: tuple, output: Any = None) -> None:
        if self.index == 'batch':
            self.value = args[0].shape[0]
        elif self.index == 'grid':
            self.value = tuple(output.shape[2:])
        else:
            self.value = output if self.index is None else output[self.index]


#: where a tokens layout finds its grid: a shape, ``('input', i)``, ``('output', i)`` or a :class:`Capture`
GridSource = Union[Sequence[int], Tuple[str, int], Capture]


class Layout:
    """The form of the value at a site, and the moves to and from the block's map.

    Args:
        index (int, optional): the element of a tuple/list value that holds the features; the others pass
            through unchanged. None: the value is the tensor.
    """

    type: str = ''

    def __init__(self, index: Optional[int] = None) -> None:
        self.index = index

    # -- the value at the site ------------------------------------------------------------------------
    def features(self, value: Any) -> Tensor:
        """The feature tensor in ``value`` (the element ``index`` of a tuple)."""
        if self.index is None:
            return value
        if not isinstance(value, (tuple, list)) or not -len(value) <= self.index < len(value):
            raise ValueError(f'layout {self.describe()} expects a tuple with an element {self.index}, got '
                             f'{describe_value(value)}')
        return value[self.index]

    def put_back(self, value: Any, features: Any) -> Any:
        if self.index is None:
            return features
        items = list(value)
        items[self.index] = features
        return type(value)(items) if isinstance(value, tuple) else items

    # -- the block's map ------------------------------------------------------------------------------
    def to_map(self, features: Tensor, args: tuple, output: Any) -> Tuple[Tensor, Restore]:
        """``(map, restore)``: the ``(B, C, *S)`` map the block sees, and how its result goes back.

        Args:
            features (Tensor): the feature tensor at the site.
            args (tuple): the hooked module's positional inputs.
            output: the hooked module's whole output (None before it ran).
        """
        raise NotImplementedError

    def channels(self, features: Tensor) -> int:
        """The channels the block sees at this site (its ``in_channels``)."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.type + (f'[{self.index}]' if self.index is not None else '')

    def captures(self) -> Sequence[Capture]:
        """Values this layout records from other modules in every forward."""
        return ()


class MapLayout(Layout):
    """``(B, C, *S)`` maps; ``rank=None`` accepts 2-D and 3-D maps, ``rank=1`` is a 1-D map ``(B, C, L)``;
    ``channels_last`` takes ``(B, *S, C)`` grids (a SAM ViT's ``(B, H, W, C)``, Video Swin's ``(B, T, H, W, C)``)."""

    def __init__(self, rank: Optional[int] = None, index: Optional[int] = None, channels_last: bool = False) -> None:
        super().__init__(index)
        self.rank = rank
        self.channels_last = channels_last
        self.type = 'channels_last' if channels_last else 'map1d' if rank == 1 else 'map'

    def to_map(self, features, args, output):
        ranks = (self.rank, ) if self.rank else (2, 3)
        if features.dim() - 2 not in ranks:
            raise ValueError(f'layout {self.describe()!r} expects a map with {ranks} spatial axes, got shape '
                             f'{tuple(features.shape)}')
        if self.channels_last:
            return features.movedim(-1, 1), lambda y: y.movedim(1, -1)
        return features, lambda y: y

    def channels(self, features: Tensor) -> int:
        return features.shape[-1] if self.channels_last else features.shape[1]


class FramesLayout(Layout):
    """A video with time folded into the batch: ``(N * T, C, H, W)`` seen as the clip ``(N, C, T, H, W)``.

    Args:
        num_segments (int | str | Callable[[], int] | Capture): ``T``: a number; ``'recognizer'``, the ``T`` of the
            video recogniser's current input ``(N, T, C, H, W)`` (recorded by a hook on the recogniser built from
            the config; the whole input during the build-time check); a function giving it at run time (the
            backbone's ``num_segments``); or a :class:`Capture` of the number of clips ``N`` (the batch of the
            backbone's input, for backbones that fold the time of a 5-D input themselves: ``T = N * T / N``).
        index (int, optional): see :class:`Layout`.
    """

    type = 'frames'

    def __init__(self, num_segments: Union[int, str, Callable[[], int], Capture],
                 index: Optional[int] = None) -> None:
        super().__init__(index)
        if not (callable(num_segments) or num_segments == 'recognizer'
                or (isinstance(num_segments, int) and not isinstance(num_segments, bool) and num_segments > 0)):
            raise ValueError(f"layout frames: num_segments must be a positive int or 'recognizer', got "
                             f'{num_segments!r}')
        self.num_segments = num_segments
        self.recorded: Optional[int] = None

    def captures(self) -> Sequence[Capture]:
        return (self.num_segments, ) if isinstance(self.num_segments, Capture) else ()

    def segments(self, batch: int) -> int:
        if self.num_segments == 'recognizer':
            t = self.recorded if self.recorded is not None else probing_batch()
        elif isinstance(self.num_segments, Capture):
            clips = self.num_segments.value
            t = batch // clips if clips else None
        elif callable(self.num_segments):
            t = self.num_segments()
        else:
            t = self.num_segments
        if t is None:
            raise RuntimeError('layout frames: the number of segments T of the folded clips is unknown here (no '
                               'video recogniser recorded its input); set layout=dict(type=\'frames\', '
                               'num_segments=T)')
        if batch % t:
            raise ValueError(f'layout frames: a batch of {batch} frames is not a whole number of clips of T={t}')
        return t

    def to_map(self, features, args, output):
        if features.dim() != 4:
            raise ValueError(f'layout frames expects (N * T, C, H, W), got shape {tuple(features.shape)}')
        nt, c, h, w = features.shape
        t = self.segments(nt)
        clip = features.reshape(nt // t, t, c, h, w).transpose(1, 2)
        return clip, lambda y: y.transpose(1, 2).reshape(nt, c, h, w)

    def channels(self, features: Tensor) -> int:
        return features.shape[1]

    def describe(self) -> str:
        t = 'backbone' if callable(self.num_segments) else self.num_segments
        return f'frames(T={t})' + (f'[{self.index}]' if self.index is not None else '')


class TokensLayout(Layout):
    """Tokens ``(B, L, C)``: ``extra_tokens`` leading tokens, then the patch grid.

    Args:
        grid (GridSource): the grid ``(H, W)`` or ``(T, H, W)`` of the patch tokens.
        extra_tokens (int): leading tokens kept apart (a class token, a distillation token). Default: 0.
        order (str): how patch tokens are numbered: ``'row'`` (row-major over the grid) or ``'space_time'``
            (TimeSformer's ``(p t)``: for a ``(T, H, W)`` grid, the patch index outer and time inner).
        index (int, optional): see :class:`Layout`.
    """

    type = 'tokens'

    def __init__(self, grid: GridSource, extra_tokens: int = 0, order: str = 'row',
                 index: Optional[int] = None) -> None:
        super().__init__(index)
        if order not in ('row', 'space_time'):
            raise ValueError(f"layout tokens: order must be 'row' or 'space_time', got {order!r}")
        self.grid = grid
        self.extra_tokens = extra_tokens
        self.order = order

    def captures(self) -> Sequence[Capture]:
        return (self.grid, ) if isinstance(self.grid, Capture) else ()

    def grid_shape(self, args: tuple, output: Any) -> Tuple[int, ...]:
        source = self.grid
        if isinstance(source, Capture):
            value = source.value
        elif isinstance(source, tuple) and len(source) == 2 and source[0] in ('input', 'output'):
            value = (args if source[0] == 'input' else output)[source[1]]
        else:
            value = source
        if value is None:
            raise RuntimeError(f'layout {self.describe()}: the token grid was not recorded in this forward')
        return tuple(int(v) for v in value)

    def to_map(self, features, args, output):
        grid = self.grid_shape(args, output)
        b, length, c = features.shape if features.dim() == 3 else (None, None, None)
        e = self.extra_tokens
        if b is None or length != e + math.prod(grid):
            raise ValueError(f'layout {self.describe()} expects tokens (B, {e} + {math.prod(grid)}, C) for the grid '
                             f'{grid}, got shape {tuple(features.shape)}')
        extra, patches = features[:, :e], features[:, e:]
        if self.order == 'space_time':  # (p t): patch outer, time inner -> (B, C, T, H, W)
            t, spatial = grid[0], grid[1:]
            grid_map = patches.reshape(b, *spatial, t, c).movedim(-2, 1).movedim(-1, 1)
        else:
            grid_map = patches.reshape(b, *grid, c).movedim(-1, 1)

        def restore(y: Tensor) -> Tensor:
            if self.order == 'space_time':
                tokens = y.movedim(1, -1).movedim(1, -2).reshape(b, -1, c)
            else:
                tokens = y.movedim(1, -1).reshape(b, -1, c)
            return tokens if e == 0 else torch.cat([extra, tokens], dim=1)

        return grid_map, restore

    def channels(self, features: Tensor) -> int:
        return features.shape[-1]

    def describe(self) -> str:
        grid = self.grid if isinstance(self.grid, (tuple, list)) and not isinstance(self.grid[0], str) else '...'
        return (f'tokens(grid={grid}, extra_tokens={self.extra_tokens}, order={self.order})' +
                (f'[{self.index}]' if self.index is not None else ''))


def describe_value(value: Any) -> str:
    """A short description of a module's output, for messages: ``Tensor(2, 64, 8, 8)``, ``tuple(...)``."""
    if isinstance(value, Tensor):
        return f'Tensor{tuple(value.shape)}'
    if isinstance(value, (tuple, list)):
        inner = ', '.join(describe_value(v) for v in value[:4])
        return f'{type(value).__name__}({inner}{", ..." if len(value) > 4 else ""})'
    return type(value).__name__


def layout_from_config(spec: Union[str, Dict], where: str) -> Layout:
    """A layout from an entry's ``layout`` field: ``'map'``, ``'map1d'`` or a dict with ``type`` and the layout's
    arguments (``frames``: ``num_segments``; ``tokens``: ``grid``, ``extra_tokens``, ``order``; all: ``index``)."""
    cfg = dict(type=spec) if isinstance(spec, str) else dict(spec) if isinstance(spec, dict) else None
    if cfg is None or cfg.get('type') not in LAYOUT_TYPES:
        raise ValueError(f"{where}: field 'layout' must be one of {LAYOUT_TYPES} or a dict with one of them as "
                         f"'type', got {spec!r}")
    kind = cfg.pop('type')
    makers = {
        'map': lambda index=None: MapLayout(None, index),
        'map1d': lambda index=None: MapLayout(1, index),
        'channels_last': lambda index=None: MapLayout(None, index, channels_last=True),
        'frames': lambda num_segments, index=None: FramesLayout(num_segments, index),
        'tokens': lambda grid, extra_tokens=0, order='row', index=None: TokensLayout(
            tuple(grid), extra_tokens, order, index),
    }
    try:
        return makers[kind](**cfg)
    except TypeError as err:
        raise TypeError(f"{where}: field 'layout' ({kind}): {err}") from err
