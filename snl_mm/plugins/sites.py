"""What the mechanism knows about backbones, and how a block is applied at its place.

Everything it knows comes from declarations that the backbone adapters (:mod:`snl_mm.backbones`) register per
class (the ``register_*`` functions below: positions of residual blocks, stages, layouts, the check's input,
replaceable modules, classes with a ``plugins`` argument of their own), each in one table found by :func:`lookup`
along the class's MRO (subclasses inherit them), never from guessing.

A block is applied by a hook on the module at its site (:class:`BlockCall`: ``'post'`` on that module's output,
``'pre'`` on its first input) or in place of a module (:class:`Replacement`); it is a child of a host module, so
its keys sit under the host's (``layer3.4.snl_block.theta.weight``). Hooks sit on residual blocks, convolutions
or drop-paths, never on norm layers, so SyncBN conversion and conv-BN fusion keep them; they are methods of an
object holding the block, so ``copy.deepcopy`` (EMA) maps them to the copy's blocks.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from torch import Tensor

from .layouts import Layout


@dataclass(frozen=True)
class Site:
    """Where, inside one residual block, a position is realised: the submodule ``module`` (a path relative to the
    residual block; ``''`` is the block itself) carries the hook, ``when`` ``'post'`` on its output, ``'pre'`` on
    its first input."""

    module: str
    when: str


_SITES: Dict[type, Callable[[nn.Module], Dict[str, Site]]] = {}
_STAGES: Dict[type, Callable[[nn.Module], List[Tuple[str, Sequence[nn.Module]]]]] = {}
_LAYOUTS: Dict[type, Callable[[nn.Module, str], Optional[Layout]]] = {}
_PROBES: Dict[type, Callable[[nn.Module], Tuple[int, ...]]] = {}
_REPLACEABLE: Dict[type, bool] = {}
_NATIVE: Dict[type, Tuple[str, ...]] = {}


def lookup(table: Dict[type, Any], cls: type, default: Any = None) -> Any:
    """The declaration of ``cls`` or of its nearest base class in ``table``."""
    return next((table[c] for c in cls.__mro__ if c in table), default)


def _registrar(table: Dict[type, Callable]) -> Callable:

    def register(*classes: type) -> Callable[[Callable], Callable]:

        def decorator(resolver: Callable) -> Callable:
            table.update(dict.fromkeys(classes, resolver))
            return resolver

        return decorator

    return register


#: ``@register_sites(*block_classes)``: ``resolver(block) -> {position: Site}``.
register_sites = _registrar(_SITES)
#: ``@register_stages(*backbone_classes)``: ``resolver(backbone) -> [(stage path, sequence of blocks)]``.
register_stages = _registrar(_STAGES)
#: ``@register_layout(*backbone_classes)``: ``resolver(backbone, path) -> Layout | None`` (None: nothing declared).
register_layout = _registrar(_LAYOUTS)
#: ``@register_probe(*backbone_classes)``: ``resolver(backbone) -> input shape`` of the build-time check.
register_probe = _registrar(_PROBES)


def register_replaceable(*classes: type, residual: bool) -> None:
    """Declare modules a block may replace (``replace=path``): ``residual=True`` when the module returns its input
    plus its update (the block then replaces it as it is), False when its caller adds the input (a branch)."""
    _REPLACEABLE.update(dict.fromkeys(classes, residual))


def register_native(*classes: type, positions: Sequence[str]) -> None:
    """Declare backbone classes whose own ``plugins`` argument implements ``positions`` (mmdetection's design);
    ``()`` for a ``plugins`` argument that upstream does not implement (mmseg's UNet asserts it is None)."""
    _NATIVE.update(dict.fromkeys(classes, tuple(positions)))


def block_sites(block: nn.Module) -> Optional[Dict[str, Site]]:
    """The positions offered by ``block`` (``{position: Site}``), or None for an unknown block class."""
    resolver = lookup(_SITES, type(block))
    return None if resolver is None else resolver(block)


def residual_stages(backbone: nn.Module) -> List[Tuple[str, Sequence[nn.Module]]]:
    """``[(path, stage)]`` of a backbone with residual stages: registered, or named by ``res_layers``."""
    resolver = lookup(_STAGES, type(backbone))
    if resolver is not None:
        return resolver(backbone)
    names = getattr(backbone, 'res_layers', None)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f'{type(backbone).__name__} has no residual stages (no res_layers); insert blocks '
                        "after named submodules: plugins=[dict(cfg=..., after='path')]")
    return [(name, getattr(backbone, name)) for name in names]


def declared_layout(backbone: nn.Module, path: str) -> Optional[Layout]:
    """The layout the backbone's adapter declares at ``path`` (None: nothing declared)."""
    resolver = lookup(_LAYOUTS, type(backbone))
    return None if resolver is None else resolver(backbone, path)


def declared_probe(backbone: nn.Module) -> Optional[Tuple[int, ...]]:
    resolver = lookup(_PROBES, type(backbone))
    return None if resolver is None else tuple(resolver(backbone))


def replaces_residual(module: nn.Module) -> Optional[bool]:
    """Whether a replaceable module's output includes its input (None: not declared)."""
    return lookup(_REPLACEABLE, type(module))


def native_positions(cls: type) -> Optional[Tuple[str, ...]]:
    """The positions a class's own ``plugins`` argument implements (None: not declared)."""
    return lookup(_NATIVE, cls)


# -- applying a block -----------------------------------------------------------------------------------------
class BlockCall:
    """A ``block`` ``(B, C, *S) -> (B, C, *S)`` applied to the value at a site through its ``layout`` (checked at
    build time: nothing is checked here); with ``branch``, only what the block adds (``block(x) - x``; zero for
    tokens it does not see, a class token), for a replaced module whose caller adds its input (a ViT's ``attn``)."""

    def __init__(self, block: nn.Module, layout: Layout, branch: bool = False) -> None:
        self.block = block
        self.layout = layout
        self.branch = branch

    def __call__(self, value: Any, args: tuple = (), output: Any = None) -> Any:
        features = self.layout.features(value)
        x, restore = self.layout.to_map(features, args, output)
        y = restore(self.block(x))
        return self.layout.put_back(value, y - features if self.branch else y)

    def post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        """As a forward hook: the block applied to the module's output."""
        return self(output, args, output)

    def pre(self, module: nn.Module, args: tuple) -> tuple:
        """As a forward pre-hook: the block applied to the module's first input."""
        return (self(args[0], args), *args[1:])


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


def attach(host: nn.Module, name: str, block: nn.Module, target: nn.Module, when: str, layout: Layout) -> None:
    """Make ``block`` the child ``name`` of ``host`` and apply it at ``target`` (``'post'`` or ``'pre'``)."""
    host.add_module(name, block)
    call = BlockCall(block, layout)
    if when == 'post':
        target.register_forward_hook(call.post)
    else:
        target.register_forward_pre_hook(call.pre)
    if type(target).__module__.startswith('torch.nn'):
        # torch.fx records torch.nn modules as leaves, without running their hooks: this one declares itself
        # not a leaf (the tracer reads `module.__module__`), so that a traced model keeps the block
        target.__module__ = __name__


def replace(parent: nn.Module, child_name: str, name: str, block: nn.Module, layout: Layout, branch: bool,
            replaced: str) -> None:
    """Put ``block`` in place of ``parent.<child_name>`` (a :class:`Replacement` holding it under ``name``)."""
    setattr(parent, child_name, Replacement(name, BlockCall(block, layout, branch), replaced))
