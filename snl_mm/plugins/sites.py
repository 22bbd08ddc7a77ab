"""Where blocks go and how they are applied there.

What the mechanism knows about backbones comes from declarations that backbone adapters register
(:mod:`snl_mm.backbones`), never from guessing:

* :func:`register_sites`: per residual-block class, the submodule and hook that realise each position
  (``after_block``, ``after_conv1``...), as a :class:`Site`;
* :func:`register_stages`: per backbone class, its residual stages (default: the ``res_layers`` names);
* :func:`register_layout`: per backbone class, the layout of the data at a module path (a video backbone that
  folds time into the batch, a transformer's tokens);
* :func:`register_probe`: per backbone class, the input of the build-time check.

A block is applied by a hook on the module at its site (:class:`BlockHook`: ``'post'`` on that module's output,
``'pre'`` on its first input) or in place of a module (:class:`Replacement`); it is a child of a host module, so
its keys sit under the host's (``layer3.4.snl_block.theta.weight``). Hooks sit on residual blocks, convolutions
or drop-paths, never on norm layers, so SyncBN conversion and conv-BN fusion keep them; they are callable
objects, so ``copy.deepcopy`` (EMA) maps them to the copy's blocks.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from torch import Tensor

from .layouts import Layout

#: the hook kinds: on a module's output, on its first input, in its place
WHEN = ('post', 'pre', 'replace')


@dataclass(frozen=True)
class Site:
    """Where, inside one residual block, a position is realised.

    Args:
        module (str): path of the submodule, relative to the residual block, that carries the hook; ``''`` is
            the residual block itself.
        when (str): ``'post'``: the block transforms that submodule's output; ``'pre'``: its first input.
    """

    module: str
    when: str


def _by_class(table: Dict[type, Callable], obj: Any) -> Optional[Callable]:
    for cls in type(obj).__mro__:
        if cls in table:
            return table[cls]
    return None


def _registrar(table: Dict[type, Callable]) -> Callable:

    def register(*classes: type) -> Callable[[Callable], Callable]:

        def decorator(resolver: Callable) -> Callable:
            for cls in classes:
                table[cls] = resolver
            return resolver

        return decorator

    return register


_SITES: Dict[type, Callable[[nn.Module], Dict[str, Site]]] = {}
_STAGES: Dict[type, Callable[[nn.Module], List[Tuple[str, Sequence[nn.Module]]]]] = {}
_LAYOUTS: Dict[type, Callable[[nn.Module, str], Optional[Layout]]] = {}
_PROBES: Dict[type, Callable[[nn.Module], Tuple[int, ...]]] = {}

#: ``@register_sites(*block_classes)``: ``resolver(block) -> {position: Site}``, inherited by subclasses.
register_sites = _registrar(_SITES)
#: ``@register_stages(*backbone_classes)``: ``resolver(backbone) -> [(stage path, sequence of blocks)]``.
register_stages = _registrar(_STAGES)
#: ``@register_layout(*backbone_classes)``: ``resolver(backbone, path) -> Layout | None`` (None: a map).
register_layout = _registrar(_LAYOUTS)
#: ``@register_probe(*backbone_classes)``: ``resolver(backbone) -> input shape`` of the build-time check.
register_probe = _registrar(_PROBES)


def block_sites(block: nn.Module) -> Optional[Dict[str, Site]]:
    """The positions offered by ``block`` (``{position: Site}``), or None for an unknown block class."""
    resolver = _by_class(_SITES, block)
    return None if resolver is None else resolver(block)


def residual_stages(backbone: nn.Module) -> List[Tuple[str, Sequence[nn.Module]]]:
    """``[(path, stage)]`` of a backbone with residual stages: registered, or named by ``res_layers``."""
    resolver = _by_class(_STAGES, backbone)
    if resolver is not None:
        return resolver(backbone)
    names = getattr(backbone, 'res_layers', None)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f'{type(backbone).__name__} has no residual stages (no res_layers); insert blocks '
                        "after named submodules: plugins=[dict(cfg=..., after='path')]")
    return [(name, getattr(backbone, name)) for name in names]


def declared_layout(backbone: nn.Module, path: str) -> Optional[Layout]:
    """The layout the backbone's adapter declares at ``path`` (None: nothing declared)."""
    resolver = _by_class(_LAYOUTS, backbone)
    return None if resolver is None else resolver(backbone, path)


def declared_probe(backbone: nn.Module) -> Optional[Tuple[int, ...]]:
    resolver = _by_class(_PROBES, backbone)
    return None if resolver is None else tuple(resolver(backbone))


# -- applying a block -----------------------------------------------------------------------------------------
class BlockCall:
    """A block applied to the value at a site: through its layout, and as a residual or as a branch.

    Args:
        block (nn.Module): ``(B, C, *S) -> (B, C, *S)``.
        layout (Layout): how the block sees the value.
        branch (bool): return only what the block adds (``block(x) - x``; zero for the tokens the block does not
            see, such as a class token), for a replaced module whose output is added to its input by its caller
            (a ViT's ``attn``).
    """

    def __init__(self, block: nn.Module, layout: Layout, branch: bool = False) -> None:
        self.block = block
        self.layout = layout
        self.branch = branch

    def __call__(self, value: Any, args: tuple = (), output: Any = None) -> Any:
        features = self.layout.features(value)
        x, restore = self.layout.to_map(features, args, output)
        y = restore(self.block(x))
        return self.layout.put_back(value, y - features if self.branch else y)


class BlockHook:
    """Forward hook (``'post'``: ``output -> block(output)``) or pre-hook (``'pre'``: first input)."""

    def __init__(self, call: BlockCall, when: str) -> None:
        self.call = call
        self.when = when

    def __call__(self, module: nn.Module, args: tuple, output: Any = None) -> Any:
        if self.when == 'post':
            return self.call(output, args, output)
        return (self.call(args[0], args), *args[1:])


class Replacement(nn.Module):
    """A block in place of a module: ``forward(x, *rest)`` applies the block to ``x`` (the other arguments,
    e.g. Swin's ``hw_shape``, are read by the layout). The block is its child under its name."""

    def __init__(self, name: str, call: BlockCall, replaced: str) -> None:
        super().__init__()
        self.add_module(name, call.block)
        self.call = call
        self.replaced = replaced

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.call(x, (x, *args))

    def extra_repr(self) -> str:
        return f'replaces {self.replaced}, layout={self.call.layout.describe()}' + \
            (', branch' if self.call.branch else '')


def attach(host: nn.Module, name: str, block: nn.Module, target: nn.Module, when: str,
           layout: Layout) -> None:
    """Make ``block`` the child ``name`` of ``host`` and apply it at ``target`` (``'post'`` or ``'pre'``)."""
    if when not in ('post', 'pre'):
        raise ValueError(f"when must be 'post' or 'pre', got {when!r}")
    host.add_module(name, block)
    hook = BlockHook(BlockCall(block, layout), when)
    if when == 'post':
        target.register_forward_hook(hook)
    else:
        target.register_forward_pre_hook(hook)


def replace(parent: nn.Module, child_name: str, name: str, block: nn.Module, layout: Layout, branch: bool,
            replaced: str) -> Replacement:
    """Put ``block`` in place of ``parent.<child_name>`` (a :class:`Replacement` holding it under ``name``)."""
    module = Replacement(name, BlockCall(block, layout, branch), replaced)
    setattr(parent, child_name, module)
    return module
