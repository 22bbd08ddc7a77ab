"""The build-time check: one dry forward of the backbone on a small input, watched by hooks.

The probe runs in eval mode without gradients, from a private random generator, and puts every module back in
the mode it was in: building a model with blocks changes neither the global random state nor any statistics.
The input is the backbone's own (:func:`~snl_mm.plugins.sites.register_probe` by its adapter), the entry's
``probe_shape``, or one image of the size the backbone keeps as ``img_size`` (else 224 x 224) with the channels of
the backbone's first convolution.
"""
import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .layouts import probing
from .sites import declared_probe

#: the image size of the check when nothing else says (what most image backbones are built for). The check tries
#: a 224 x 160 image first (:func:`wide_width`): most backbones take it, and it tells a feature map (B, C, H, W),
#: whose last two axes keep that ratio, from a square attention map (B, heads, L, L) or a channels-last grid
#: (B, H, W, C).
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
    first = first_conv(backbone)
    if isinstance(first, nn.Conv3d):  # a video backbone: one clip
        return [(1, first.in_channels, *DEFAULT_CLIP)]
    height, width = expected_size(backbone)
    channels = input_channels(backbone)
    wide = (1, channels, height, wide_width(width) if width == height else width)
    return [wide, (1, channels, height, height)]


def wide_width(size: int) -> int:
    """The width of the check's first image for a backbone built for ``size x size`` images: about 5/7 of it, a
    ratio no common stride or channel count makes look square, rounded down to a multiple of 32 (the largest
    stride of most backbones) where the image is large enough: 224 -> 160, 64 -> 32."""
    width = size * 5 // 7
    return width // 32 * 32 if width >= 32 else max(1, width)


def probe_shape(backbone: nn.Module, shape: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
    """The first input shape the build-time check tries (:func:`probe_shapes`)."""
    return probe_shapes(backbone, shape)[0]


def first_conv(backbone: nn.Module) -> Optional[nn.Module]:
    return next((m for m in backbone.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)


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


def input_channels(backbone: nn.Module) -> int:
    """The input channels of a backbone: those of its first convolution (3 when it has none)."""
    first = first_conv(backbone)
    return first.in_channels if first is not None else 3


@contextlib.contextmanager
def evaluation(model: nn.Module, batch: int) -> Iterator[None]:
    """Eval mode, no gradients and a forked random state for the duration; training flags restored after. Layouts
    whose clip length comes from a recogniser take the whole probe batch as one clip meanwhile."""
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), probing(batch):
            model.eval()
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def probe_input(shape: Sequence[int]) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=generator)


class Observer:
    """Counts the calls of one module during the probe and keeps what it saw (inputs and output)."""

    def __init__(self) -> None:
        self.calls = 0
        self.args: tuple = ()
        self.output: Any = None

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.calls += 1
        self.args, self.output = args, output


def run_first(model: nn.Module, shapes: Sequence[Sequence[int]],
              watched: Dict[Any, nn.Module]) -> Tuple[Tuple[int, ...], Dict[Any, 'Observer']]:
    """:func:`run` on the first of ``shapes`` the model takes; ``(that shape, the observers)``."""
    for shape in shapes[:-1]:
        try:
            return tuple(shape), run(model, shape, watched)
        except RuntimeError:
            continue
    return tuple(shapes[-1]), run(model, shapes[-1], watched)


def run(model: nn.Module, shape: Sequence[int], watched: Dict[Any, nn.Module]) -> Dict[Any, Observer]:
    """One dry forward of ``model`` on an input of ``shape``, observing every module of ``watched``.

    Returns:
        dict: the key of each watched module -> its :class:`Observer`.

    Raises:
        RuntimeError: the forward failed; the message says it was the build-time check and how to give it
            another input (``probe_shape``).
    """
    observers = {key: Observer() for key in watched}
    handles = [module.register_forward_hook(observers[key]) for key, module in watched.items()]
    try:
        with evaluation(model, shape[0]):
            model(probe_input(shape))
    except Exception as err:  # noqa: BLE001 (any failure of the forward is reported with its context)
        raise RuntimeError(
            f'the build-time check of the plugin entries runs one forward of {type(model).__name__} on an input '
            f'of shape {tuple(shape)}, which failed: {type(err).__name__}: {err}. Give the backbone config an '
            'input it accepts: probe_shape=(B, C, ...)') from err
    finally:
        for handle in handles:
            handle.remove()
    return observers


class CallCounter:
    """Forward pre-hook of an inserted block: counts its calls and records the channels it received."""

    def __init__(self) -> None:
        self.calls = 0
        self.channels: List[int] = []

    def __call__(self, module: nn.Module, args: tuple) -> None:
        self.calls += 1
        if args and isinstance(args[0], Tensor) and args[0].dim() > 1:
            self.channels.append(int(args[0].shape[1]))


def count_calls(model: nn.Module, shape: Sequence[int], blocks: Sequence[nn.Module]) -> List[CallCounter]:
    """One dry forward counting the calls of each of ``blocks``."""
    counters = [CallCounter() for _ in blocks]
    handles = [b.register_forward_pre_hook(c) for b, c in zip(blocks, counters)]
    try:
        with evaluation(model, shape[0]):
            model(probe_input(shape))
    finally:
        for handle in handles:
            handle.remove()
    return counters

