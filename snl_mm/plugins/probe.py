"""The build-time check: one dry forward of the backbone on a small input, watched by hooks.

The probe runs in eval mode without gradients, from a private random generator, and puts every module back in
the mode it was in: building a model with blocks changes neither the global random state nor any statistics.
The input is the backbone's own (:func:`~snl_mm.plugins.sites.register_probe` by its adapter), the entry's
``probe_shape``, or one 64 x 64 image with the channels of the backbone's first convolution.
"""
import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .layouts import _PROBING
from .sites import declared_probe

#: the input of the check when nothing else says: one 64 x 64 image
DEFAULT_SPATIAL = (64, 64)


def probe_shape(backbone: nn.Module, shape: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
    """The input shape of the build-time check: ``shape`` if given, else the adapter's, else an image."""
    if shape is not None:
        shape = tuple(shape)
        if not all(isinstance(s, int) and s > 0 for s in shape) or len(shape) < 3:
            raise ValueError(f'probe_shape must be a tuple of positive ints (B, C, *S), got {shape!r}')
        return shape
    declared = declared_probe(backbone)
    if declared is not None:
        return declared
    return (1, input_channels(backbone), *DEFAULT_SPATIAL)


def input_channels(backbone: nn.Module) -> int:
    """The input channels of a backbone: those of its first convolution (3 when it has none)."""
    first = next((m for m in backbone.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return first.in_channels if first is not None else 3


@contextlib.contextmanager
def evaluation(model: nn.Module, batch: int) -> Iterator[None]:
    """Eval mode, no gradients and a forked random state for the duration; training flags restored after. Layouts
    whose clip length comes from a recogniser take the whole probe batch as one clip meanwhile."""
    modes = {m: m.training for m in model.modules()}
    _PROBING.append(batch)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            yield
    finally:
        _PROBING.pop()
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

