"""The build-time check: one dry forward of the backbone on a small input, watched by hooks.

The probe runs in eval mode without gradients, from a private random generator, and puts every module back in
the mode it was in: building a model with blocks changes neither the global random state nor any statistics.
Its input: :func:`probe_shapes`.
"""
import contextlib
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .layouts import Capture
from .sites import declared_probe

#: the image size of the check when nothing else says (what most image backbones are built for); the check tries
#: a 224 x 160 image first (:func:`wide_width`)
DEFAULT_SPATIAL = (224, 224)
#: ... and for a video backbone (its first convolution is 3-D): one clip of 8 frames of 64 x 64
DEFAULT_CLIP = (8, 64, 64)


def probe_shapes(backbone: nn.Module, shape: Optional[Sequence[int]] = None) -> List[Tuple[int, ...]]:
    """The input shapes the build-time check tries, in order: ``shape`` if given, else the adapter's, else a clip
    for a 3-D network, else an image wider than high and, for a backbone that takes only square images, a square
    one of the same height."""
    if shape is not None:
        shape = tuple(shape)
        if not all(isinstance(s, int) and s > 0 for s in shape) or len(shape) < 3:
            raise ValueError(f'probe_shape must be a tuple of positive ints (B, C, *S), got {shape!r}')
        return [shape]
    declared = declared_probe(backbone)
    if declared is not None:
        return [declared]
    channels = input_channels(backbone)
    if isinstance(_first_conv(backbone), nn.Conv3d):  # a video backbone: one clip
        return [(1, channels, *DEFAULT_CLIP)]
    height, width = expected_size(backbone)
    return [(1, channels, height, wide_width(width) if width == height else width), (1, channels, height, height)]


def wide_width(size: int) -> int:
    """The width of the check's first image for a backbone built for ``size x size`` images: about 5/7 of it, a
    ratio no common stride or channel count makes look square (a feature map keeps it, a square attention map or a
    channels-last grid does not), rounded down to a multiple of 32 (the largest stride of most backbones) where the
    image is large enough: 224 -> 160, 64 -> 32."""
    width = size * 5 // 7
    return width // 32 * 32 if width >= 32 else max(1, width)


def expected_size(backbone: nn.Module) -> Tuple[int, int]:
    """The image size a backbone says it expects (``img_size``, or its patch embedding's ``init_input_size``, as
    transformers with position embeddings keep it), else :data:`DEFAULT_SPATIAL`."""
    patch_embed = getattr(backbone, 'patch_embed', None)
    for size in (getattr(backbone, 'img_size', None), getattr(patch_embed, 'init_input_size', None)):
        if isinstance(size, int) and size > 0:
            return (size, size)
        if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
            return tuple(size)
    return DEFAULT_SPATIAL


def _first_conv(backbone: nn.Module) -> Optional[nn.Module]:
    return next((m for m in backbone.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)


def input_channels(backbone: nn.Module) -> int:
    """The input channels of a backbone: those of its first convolution (3 when it has none)."""
    return getattr(_first_conv(backbone), 'in_channels', 3)


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradients and a forked random state for the duration; training flags restored after."""
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            yield
    finally:
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def one_clip(captures: Sequence[Capture]) -> Iterator[None]:
    """The check's input is one clip: the ``captures`` that the model around the backbone fills (``path=None``,
    a recogniser's count of clips) count one meanwhile."""
    outer = [c for c in captures if c.path is None]
    for capture in outer:
        capture.value = 1
    try:
        yield
    finally:
        for capture in outer:
            capture.value = None


def probe_input(shape: Sequence[int]) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


class Observation(NamedTuple):
    """What the check saw of one module: how often it ran, its last positional inputs and output."""
    calls: int
    args: tuple
    output: Any


def run(model: nn.Module, shapes: Sequence[Sequence[int]], watched: Sequence[nn.Module], pre: bool = False,
        captures: Sequence[Capture] = ()) -> Tuple[Tuple[int, ...], List[Observation]]:
    """One dry forward of ``model`` on the first of ``shapes`` it takes, observing every module of ``watched``
    (their inputs only, before they run, with ``pre``) while the ``captures`` record.

    Returns:
        tuple: the input shape it ran on, and one :class:`Observation` per watched module.

    Raises:
        RuntimeError: the forward failed on every shape; the message says it was the build-time check and how to
            give it another input (``probe_shape``).
    """
    for i, shape in enumerate(shapes):
        seen: List[List[Any]] = [[0, (), None] for _ in watched]

        def observer(record: List[Any]):
            def hook(module: nn.Module, args: tuple, output: Any = None) -> None:
                record[:] = [record[0] + 1, args, output]
            return hook

        handles = [m.register_forward_pre_hook(observer(r)) if pre else m.register_forward_hook(observer(r))
                   for m, r in zip(watched, seen)]
        handles += [c.install(model.get_submodule(c.path)) for c in captures if c.path is not None]
        try:
            with evaluation(model):
                model(probe_input(shape))
            return tuple(shape), [Observation(*record) for record in seen]
        except Exception as err:  # noqa: BLE001 (any failure of the forward is reported with its context)
            if i + 1 < len(shapes):
                continue
            raise RuntimeError(
                f'the build-time check of the plugin entries runs one forward of {type(model).__name__} on an '
                f'input of shape {tuple(shape)}, which failed: {type(err).__name__}: {err}. Give the backbone '
                'config an input it accepts: probe_shape=(B, C, ...)') from err
        finally:
            for handle in handles:
                handle.remove()
