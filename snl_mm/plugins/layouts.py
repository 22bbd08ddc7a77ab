"""How a block sees the data at the place it is inserted: the layout of the feature map there.

A nonlocal block relates the positions of a map ``(B, C, *S)``. Backbones hand their data around in other
forms, and the block must see the positions it is meant to relate, never a reinterpretation of them: a map as it
is (:class:`MapLayout`: ``map``, ``map1d``, ``channels_last``), a video with time folded into the batch as its
clips (:class:`FramesLayout`), tokens as their patch grid (:class:`TokensLayout`); ``docs/plugins.md`` tabulates
them. A layout may also pick one element of a tuple output (``index``): Swin's stages return ``(tokens, hw_shape)``.
A tokens layout reads its grid from a fixed shape, from the hooked module's inputs or outputs (Swin's blocks get
``hw_shape`` as their second argument), or from a :class:`Capture` of another module earlier in the same forward
(a ViT's ``patch_embed`` returns the patch resolution).

Everything that depends on the data's shape is checked once, on the value the build-time check observes
(:meth:`Layout.validate`); :meth:`Layout.to_map`, which runs at every call, only rearranges, with no Python
branch on a shape, so that ``torch.fx``, ``torch.export`` and ONNX trace it.
"""
import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

LAYOUT_TYPES = ('map', 'map1d', 'channels_last', 'frames', 'tokens')


class Capture:
    """A value read from a module in every forward, for a layout that needs it at call time.

    Args:
        path (str | None): the module, relative to the backbone (``''``: the backbone); None: the model that
            holds the backbone (a video recogniser, whose forward pre-hook the registry installs; the build-time
            check runs the backbone alone, on one clip, and sets the value to 1 meanwhile).
        index (int | str, optional): the element of a tuple output to keep; ``'grid'``: the spatial shape ``S``
            of a map output ``(B, C, *S)``; ``'batch'``: the batch size of the module's input (a pre-hook); the
            whole output when None.
    """

    def __init__(self, path: Optional[str], index: Union[None, int, str] = None) -> None:
        self.path = path
        self.index = index
        self.value: Any = None

    def __call__(self, module: nn.Module, args: tuple, extra: Any = None) -> None:
        """The hook: ``extra`` is a pre-hook's keyword arguments, or a forward hook's output."""
        if self.index == 'batch':
            self.value = (args[0] if args else extra['inputs']).shape[0]
        elif self.index == 'grid':
            self.value = extra.shape[2:]
        else:
            self.value = extra if self.index is None else extra[self.index]

    def install(self, module: nn.Module):
        """Register the hook on ``module`` (a pre-hook for ``'batch'``, read before the module runs); its handle."""
        if self.index == 'batch':
            return module.register_forward_pre_hook(self, with_kwargs=True)
        return module.register_forward_hook(self)

    def read(self, what: str) -> Any:
        if self.value is None:
            raise RuntimeError(f'{what} was not recorded in this forward ({self!r}); with the backbone alone (no '
                               "video recogniser around it), set the entry's layout, e.g. "
                               "layout=dict(type='frames', num_segments=T)")
        return self.value

    def __repr__(self) -> str:
        return f'Capture({self.path!r}, {self.index!r})'


#: where a tokens layout finds its grid: a shape, ``('input', i)``, ``('output', i)`` or a :class:`Capture`
GridSource = Union[Sequence[int], Tuple[str, int], Capture]


class Layout:
    """The form of the value at a site, and the moves to and from the block's map. ``index``: the element of a
    tuple/list value that holds the features (the others pass through unchanged); None: the value is the tensor."""

    type: str = ''

    def __init__(self, index: Optional[int] = None) -> None:
        self.index = index

    def features(self, value: Any) -> Tensor:
        """The feature tensor in ``value`` (the element ``index`` of a tuple)."""
        return value if self.index is None else value[self.index]

    def put_back(self, value: Any, features: Any) -> Any:
        if self.index is None:
            return features
        items = list(value)
        items[self.index] = features
        return type(value)(items) if isinstance(value, tuple) else items

    def to_map(self, features: Tensor, args: tuple, output: Any) -> Tuple[Tensor, Any]:
        """``(map, restore)``: the ``(B, C, *S)`` map the block sees in ``features`` (the tensor at the site; the
        hooked module's positional inputs ``args`` and whole ``output``, None before it ran, are there to read),
        and the function that puts the block's result back."""
        raise NotImplementedError

    def validate(self, value: Any, args: tuple, output: Any) -> None:
        """At build time, on the observed value: raise ValueError unless :meth:`to_map` can take it."""
        if self.index is not None and not (isinstance(value, (tuple, list)) and -len(value) <= self.index < len(value)):
            raise ValueError(f'layout {self.describe()} expects a tuple with an element {self.index}, got '
                             f'{describe_value(value)}')
        features = self.features(value)
        if not isinstance(features, Tensor):
            raise ValueError(f'layout {self.describe()} expects a Tensor, got {describe_value(features)}')
        self.check(features, args, output)

    def check(self, features: Tensor, args: tuple, output: Any) -> None:
        """What :meth:`to_map` assumes of the features (their rank, a whole number of clips...)."""

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

    def check(self, features, args, output):
        ranks = (self.rank, ) if self.rank else (2, 3)
        if features.dim() - 2 not in ranks:
            raise ValueError(f'layout {self.describe()!r} expects a map with {ranks} spatial axes, got shape '
                             f'{tuple(features.shape)}')

    def to_map(self, features, args, output):
        if self.channels_last:  # explicit (non-negative) dims: ONNX's TorchScript exporter needs them
            return features.movedim(features.dim() - 1, 1), lambda y: y.movedim(1, y.dim() - 1)
        return features, lambda y: y


class FramesLayout(Layout):
    """A video with time folded into the batch: ``(N * T, C, H, W)`` seen as the clip ``(N, C, T, H, W)``, with
    ``T = num_segments`` fixed (TSM's), or ``N`` counted by ``clips`` at every call (a :class:`Capture`: by the
    video recogniser for TSN's 2-D backbones, by C2D of its own 5-D input). ``index``: see :class:`Layout`."""

    type = 'frames'

    def __init__(self, num_segments: Optional[int] = None, clips: Optional[Capture] = None,
                 index: Optional[int] = None) -> None:
        super().__init__(index)
        if clips is None and not (isinstance(num_segments, int) and not isinstance(num_segments, bool)
                                  and num_segments > 0):
            raise ValueError(f'layout frames: num_segments must be a positive int, got {num_segments!r}')
        self.num_segments = num_segments
        self.clips = clips

    def captures(self) -> Sequence[Capture]:
        return () if self.clips is None else (self.clips, )

    def check(self, features, args, output):
        if features.dim() != 4:
            raise ValueError(f'layout frames expects (N * T, C, H, W), got shape {tuple(features.shape)}')
        batch = features.shape[0]
        if self.clips is None and batch % self.num_segments:
            raise ValueError(f'layout frames: a batch of {batch} frames is not a whole number of clips of '
                             f'T={self.num_segments}')
        if self.clips is not None and batch % self.clips.read('the number of clips'):
            raise ValueError(f'layout frames: a batch of {batch} frames does not split into {self.clips.value} '
                             'clips')

    def to_map(self, features, args, output):
        folded = (-1, self.num_segments) if self.clips is None else (self.clips.read('the number of clips'), -1)
        clip = features.unflatten(0, folded).transpose(1, 2)
        return clip, lambda y: y.transpose(1, 2).flatten(0, 1)

    def describe(self) -> str:
        t = self.num_segments if self.clips is None else f'N*T/N, N from {self.clips!r}'
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

    def grid_shape(self, args: tuple, output: Any) -> Sequence[int]:
        source = self.grid
        if isinstance(source, Capture):
            return source.read('the token grid')
        if isinstance(source, tuple) and len(source) == 2 and source[0] in ('input', 'output'):
            return (args if source[0] == 'input' else output)[source[1]]
        return source

    def check(self, features, args, output):
        grid = tuple(int(g) for g in self.grid_shape(args, output))
        e = self.extra_tokens
        if features.dim() != 3 or features.shape[1] != e + math.prod(grid):
            raise ValueError(f'layout {self.describe()} expects tokens (B, {e} + {math.prod(grid)}, C) for the grid '
                             f'{grid}, got shape {tuple(features.shape)}')

    def to_map(self, features, args, output):
        grid = self.grid_shape(args, output)
        e = self.extra_tokens
        extra, patches = features[:, :e], features[:, e:].transpose(1, 2)  # (B, C, P)
        if self.order == 'space_time':  # (p t): patch outer, time inner -> (B, C, T, H, W)
            grid_map = patches.unflatten(2, (*grid[1:], grid[0])).movedim(len(grid) + 1, 2)
        else:
            grid_map = patches.unflatten(2, grid)

        def restore(y: Tensor) -> Tensor:
            if self.order == 'space_time':
                y = y.movedim(2, len(grid) + 1)
            tokens = y.flatten(2).transpose(1, 2)
            return tokens if e == 0 else torch.cat([extra, tokens], dim=1)

        return grid_map, restore

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
        'frames': lambda num_segments, index=None: FramesLayout(num_segments, index=index),
        'tokens': lambda grid, extra_tokens=0, order='row', index=None: TokensLayout(
            tuple(grid), extra_tokens, order, index),
    }
    try:
        return makers[kind](**cfg)
    except TypeError as err:
        raise TypeError(f"{where}: field 'layout' ({kind}): {err}") from err
