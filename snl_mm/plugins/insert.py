"""The one insertion route: :func:`add_plugins` takes a built backbone and its plugin entries.

Every way blocks get into a backbone ends here: the model registries (:mod:`snl_mm.plugins.build`),
``snl_mm.PluginBackbone`` and the classes with a ``plugins`` argument of their own. The data flow one way: **plan**
each entry into immutable :class:`Placement` s; **observe** one dry forward (:mod:`snl_mm.plugins.probe`), from
which :func:`decide` takes each block's layout and ``in_channels`` (every shape the layout assumes checked there,
once); **build** every block before touching the backbone (a failing entry leaves it unchanged); **attach** them
(:mod:`snl_mm.plugins.sites`) without renaming one upstream key; **verify** with a second dry forward that every
block ran exactly once on the channels it was built for.

Any failure stops the build with one error naming ``plugins[i]``, the place and what was observed. The backbone
then initialises, trains and freezes with its blocks (:class:`WithBlocks`).
"""
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmcv.cnn import build_plugin_layer
from mmengine.model import initialize
from torch.nn.modules.batchnorm import _NormBase

from . import entries as E
from .layouts import Capture, Layout, MapLayout, describe_value
from .probe import Observation, one_clip, probe_shapes, run
from .sites import attach, block_sites, declared_layout, replace, replaces_residual, residual_stages


@dataclass(frozen=True)
class Placement:
    """One block to insert, planned from ``plugins[index]``: built as ``cfg``, the child ``name`` of
    ``host_path``, applied at ``target_path`` (``when``: ``'post'``, ``'pre'`` or ``'replace'``, as a ``branch``
    there) through ``layout`` (None: inferred from what the check observes); ``where`` describes it."""

    index: int
    cfg: dict
    name: str
    where: str
    host_path: str
    target_path: str
    when: str
    layout: Optional[Layout]
    branch: bool = False


class Decision(NamedTuple):
    """What the build-time check decided for a placement: the block's layout and ``in_channels``."""
    layout: Layout
    channels: int


def _path(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix and name else prefix or name


def _plan_stages(backbone: nn.Module, entry: dict, index: int, name: str) -> List[Placement]:
    within = entry.get('within')
    if within is not None:
        E.check_path(within, [n for n, _ in backbone.named_modules() if n], 'within', index, type(backbone).__name__,
                     [n for n, _ in backbone.named_children()])
    stages = residual_stages(backbone.get_submodule(within) if within else backbone)
    stage_names = [n for n, _ in stages]
    position = E.check_position(entry.get('position', 'after_block'), index)
    selected = E.normalise_stages(entry.get('stages'), len(stages), index, stage_names)
    chosen = E.normalise_blocks(entry.get('blocks'), selected, [len(s) for _, s in stages], index, stage_names)
    placements = []
    for (stage_name, stage), indices in zip(stages, chosen):
        for b in indices:
            block, path = stage[b], _path(within or '', f'{stage_name}.{b}')
            sites = block_sites(block)
            if sites is None:
                raise TypeError(f'{E.where(index)}: {path} is a {type(block).__name__}, a residual block '
                                'class without registered positions (snl_mm.plugins.register_sites)')
            if position not in sites:
                raise ValueError(f"{E.where(index)}: field 'position' is {position!r} but {path} is a "
                                 f'{type(block).__name__}, which offers {tuple(sites)}')
            target = _path(path, sites[position].module)
            placements.append(Placement(index, entry['cfg'], name, f'{path} ({position})', path, target,
                                        sites[position].when, _declared(backbone, entry, index, target)))
    return placements


def _last_leaf(model: nn.Module, path: str) -> str:
    """The output of a sequential container is the output of its last member: hook (and host) that one, so the
    block is not a child the container would run itself."""
    module = model.get_submodule(path)
    while isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module):
        name, module = list(module.named_children())[-1]
        path = _path(path, name)
    return path


def _plan_path(backbone: nn.Module, entry: dict, index: int, name: str, kind: str) -> Placement:
    path = E.check_path(entry.get(kind), [n for n, _ in backbone.named_modules() if n], kind, index,
                        type(backbone).__name__, [n for n, _ in backbone.named_children()])
    target = backbone.get_submodule(path)
    if kind == 'after':
        if isinstance(target, (_NormBase, nn.GroupNorm, nn.LayerNorm)):
            raise ValueError(f"{E.where(index)}: field 'after' names {path!r}, a norm layer "
                             f'({type(target).__name__}); SyncBN conversion and conv-BN fusion replace norm '
                             'layers, which would drop the block: name the module after it')
        hooked = _last_leaf(backbone, path)
        return Placement(index, entry['cfg'], name, f'the output of {path}', hooked, hooked, 'post',
                         _declared(backbone, entry, index, hooked))
    residual = entry.get('residual', replaces_residual(target))
    if not isinstance(residual, bool):
        raise ValueError(f"{E.where(index)}: field 'replace' names {path!r} ({type(target).__name__}); say whether "
                         "its output includes its input: residual=True (the block replaces it as it is) or "
                         "residual=False (its caller adds the input: the block's update replaces it)")
    return Placement(index, entry['cfg'], name, f'in place of {path}', path, path, 'replace',
                     _declared(backbone, entry, index, path), branch=not residual)


def _declared(backbone: nn.Module, entry: dict, index: int, target: str) -> Optional[Layout]:
    """The layout an entry gives, else the one the backbone's adapter declares at ``target`` (None: neither)."""
    return E.entry_layout(entry, index) or declared_layout(backbone, target)


def plan(backbone: nn.Module, plugins: Sequence[Optional[dict]], default: str = 'stages') -> List[Placement]:
    """Check every entry and plan its placements (nothing is changed). ``None`` in ``plugins`` is an entry
    handled elsewhere (by the backbone's own ``plugins``): it keeps the indices of the others."""
    placements: List[Placement] = []
    taken: Dict[Tuple[str, str], int] = {}
    if not isinstance(plugins, (list, tuple)):
        raise TypeError(f'plugins must be a list of dicts (plugin entries) with keys {E.ENTRY_KEYS} or '
                        f"{E.AFTER_ENTRY_KEYS}, e.g. [dict(cfg=dict(type='SNLBlock'), after='layer3.4')], got "
                        f'{type(plugins).__name__}')
    for index, entry in enumerate(plugins):
        if entry is None:
            continue
        kind = E.addressing(entry, index, default)
        name = E.block_name(E.resolve_type(entry['cfg'], index), entry, index)
        planned = (_plan_stages(backbone, entry, index, name) if kind == 'stages' else
                   [_plan_path(backbone, entry, index, name, kind)])
        for p in planned:
            if (p.host_path, name) in taken:
                raise ValueError(
                    f"{E.where(index)}: a block named {name!r} is already inserted at {p.host_path} by "
                    f"{E.where(taken[p.host_path, name])}; give one of them a different 'cfg.postfix' "
                    "(e.g. postfix='_2') or 'name'")
            if p.when != 'replace' and hasattr(backbone.get_submodule(p.host_path), name):
                raise ValueError(f"{E.where(index)}: {p.host_path} already has an attribute {name!r}; set "
                                 "'cfg.postfix' or 'name' to name the inserted block differently")
            taken[p.host_path, name] = index
        placements += planned
    return placements


def decide(backbone: nn.Module, p: Placement, seen: Observation, shape: Sequence[int]) -> Decision:
    """The layout and channels of a placement's block, from what the build-time check observed there; every
    shape the layout depends on is checked here, once."""
    name = type(backbone).__name__
    if seen.calls != 1:
        times = 'never' if seen.calls == 0 else f'{seen.calls} times'
        raise ValueError(f'{E.where(p.index)}: {p.where} runs {seen.calls} times in one forward of {name} (input '
                         f'{tuple(shape)}); a block there would run {times}: name a module that runs exactly once '
                         "(a residual block, a stage's last block, a layer)")
    value = seen.args[0] if p.when in ('pre', 'replace') else seen.output
    layout = p.layout or _inferred_layout(value, p, shape)
    try:
        layout.validate(value, seen.args, seen.output)
        block_map, _ = layout.to_map(layout.features(value), seen.args, seen.output)
    except (ValueError, RuntimeError, TypeError) as err:
        raise ValueError(f'{E.where(p.index)}: at {p.where} the value is {describe_value(value)}, which layout '
                         f'{layout.describe()} cannot take: {err}') from err
    if p.when == 'replace' and describe_value(seen.output) != describe_value(seen.args[0]):
        raise ValueError(f'{E.where(p.index)}: {p.where}: the module maps {describe_value(seen.args[0])} to '
                         f'{describe_value(seen.output)}; a block keeps the shape, so it can only replace a '
                         'module that does too')
    channels, given = int(block_map.shape[1]), p.cfg.get('in_channels')
    if given is not None and given != channels:
        raise ValueError(f"{E.where(p.index)}: field 'cfg' gives in_channels={given!r}, but the block at "
                         f'{p.where} receives {channels} channels (observed: {describe_value(value)}, '
                         f'layout {layout.describe()}); leave in_channels out or set it to {channels}')
    return Decision(layout, channels)


def _inferred_layout(value: Any, p: Placement, shape: Sequence[int]) -> Layout:
    """A map ``(B, C, *S)``, when the value is one: its last two spatial axes keep the input's aspect ratio (up to
    the rounding of strides), which a channels-last ``(B, H, W, C)`` grid or tokens would not."""
    if hasattr(value, 'dim') and value.dim() in (4, 5) and len(shape) >= 4:
        (h, w), (big_h, big_w) = value.shape[-2:], shape[-2:]
        if abs(h * big_w - w * big_h) <= max(big_h, big_w):
            return MapLayout()
        raise ValueError(
            f'{E.where(p.index)}: at {p.where} the value is {describe_value(value)}, whose last two axes do not '
            f'follow the aspect ratio of the input {tuple(shape)}: it is not a map (B, C, *S). Say how the block '
            "should see it: layout='channels_last' for (B, *S, C), layout=dict(type='tokens', ...) for tokens, "
            "layout='map' for a map all the same (after an adaptive pooling)")
    raise ValueError(
        f"{E.where(p.index)}: at {p.where} the value is {describe_value(value)}, not a 2-D or 3-D map (B, C, *S) "
        "and the backbone declares no layout there; say how the block should see it: layout='map1d' for "
        "(B, C, L), layout='channels_last' for (B, *S, C), layout=dict(type='tokens', grid=(H, W), "
        "extra_tokens=1) for tokens (B, L, C), "
        "layout=dict(type='frames', num_segments=T) for frames (N * T, C, H, W), and index=i for the i-th "
        'element of a tuple')


def _build(p: Placement, channels: int) -> nn.Module:
    """Build one block with the observed ``in_channels``; a failure names the entry and the place."""
    cfg = dict(p.cfg)
    postfix = cfg.pop('postfix', '')
    cfg['in_channels'] = channels
    try:
        return build_plugin_layer(cfg, postfix=postfix)[1]
    except (ValueError, TypeError, KeyError, AssertionError) as err:
        message = (f"{E.where(p.index)}: field 'cfg' ({cfg.get('type')!r}) cannot be built at {p.where} with "
                   f'in_channels={channels}: {err}')
        try:
            new = type(err)(message)
        except TypeError:
            new = ValueError(message)
        raise new from err


def _mark_loaded(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook of an inserted block: remember that a checkpoint provided its weights."""
    if any(key.startswith(prefix) for key in state_dict):
        module._plugin_loaded = True


def insert(backbone: nn.Module, plugins: Sequence[Optional[dict]], shape: Optional[Sequence[int]] = None,
           default: str = 'stages') -> List[str]:
    """Check the entries, insert their blocks into ``backbone`` and verify them (see the module docstring).

    Args:
        backbone (nn.Module): any backbone; stage addressing needs residual stages (``res_layers`` or an adapter).
        plugins (Sequence[dict]): plugin entries (:mod:`snl_mm.plugins.entries`); None for an entry handled
            elsewhere.
        shape (Sequence[int], optional): input shape of the build-time check (the adapter's or an image by
            default).
        default (str): the addressing of entries without ``after`` or ``replace``: ``'stages'``.

    Returns:
        list[str]: module paths of the inserted blocks, in the order of the entries.
    """
    placements = plan(backbone, plugins, default)
    if not placements:
        return []
    captures = list({id(c): c for p in placements if p.layout for c in p.layout.captures()}.values())
    with one_clip(captures):
        shape, seen = run(backbone, probe_shapes(backbone, shape),
                          [backbone.get_submodule(p.target_path) for p in placements], captures=captures)
        decisions = [decide(backbone, p, s, shape) for p, s in zip(placements, seen)]
        blocks = [_build(p, d.channels) for p, d in zip(placements, decisions)]
        for c in captures:
            if c.path is not None:
                c.install(backbone.get_submodule(c.path))
        backbone.__dict__.setdefault('_snl_mm_captures', []).extend(captures)
        for p, d, block in zip(placements, decisions, blocks):
            if p.when == 'replace':
                parent, _, child = p.target_path.rpartition('.')
                replace(backbone.get_submodule(parent), child, p.name, block, d.layout, p.branch, p.target_path)
            else:
                attach(backbone.get_submodule(p.host_path), p.name, block, backbone.get_submodule(p.target_path),
                       p.when, d.layout)
            block._plugin_loaded = False
            block._plugin_trainable = [param.requires_grad for param in block.parameters()]
            block.register_load_state_dict_pre_hook(_mark_loaded)
        _, ran = run(backbone, [shape], blocks, pre=True)
    for p, d, r in zip(placements, decisions, ran):
        received = [int(r.args[0].shape[1])] if r.calls else []
        if r.calls != 1 or received != [d.channels]:
            raise ValueError(f'{E.where(p.index)}: the block inserted at {p.where} ran {r.calls} times in the '
                             f'build-time check (channels seen: {received}, built for {d.channels}); '
                             'a block must run exactly once per forward')
    return [_path(p.host_path, p.name) for p in placements]


def outer_captures(backbone: nn.Module) -> List[Capture]:
    """The captures of a backbone's layouts that the model holding it fills (a recogniser's clip count)."""
    return [c for c in backbone.__dict__.get('_snl_mm_captures', ()) if c.path is None]


class WithBlocks:
    """How a backbone with inserted blocks initialises and trains; its methods replace the instance's
    ``init_weights`` and ``train`` (methods of an object of the instance's: a deep copy calls its own backbone's).

    * :meth:`init_weights`: the class's own (then ``then``, init configs given beside the entries), then every
      block back to the identity (its ``init_weights()``, or ``reset_parameters()`` for a plain torch module such
      as mmcv's ``ContextBlock``): upstream initialisations re-initialise every norm (mmpretrain's ResNet sets all
      BN weights to 1). A block whose weights a checkpoint loaded meanwhile (``init_cfg=dict(type='Pretrained')``
      of a network trained with it) keeps them.
    * :meth:`train`: the class's own (``frozen_stages``, ``norm_eval``...), then a block is frozen as a whole or
      trained as built. Backbones freeze their pretrained norms on ``train()`` (mmaction2's CSN with
      ``bn_frozen``); a block's output norm starts at zero and, frozen, would keep it the identity: a block with
      some parameters still trainable gets the flags it was built with back; one in a frozen stage stays frozen.
    """

    def __init__(self, module: nn.Module, paths: Sequence[str], then: Optional[Sequence[dict]] = None) -> None:
        self.module = module
        self.paths = list(paths)
        self.then = list(then or [])

    def init_weights(self, *args: Any, **kwargs: Any) -> None:
        blocks = [self.module.get_submodule(path) for path in self.paths]
        for block in blocks:
            block._plugin_loaded = False
        if hasattr(type(self.module), 'init_weights'):
            type(self.module).init_weights(self.module, *args, **kwargs)
        if self.then:
            initialize(self.module, self.then)
        for block in blocks:
            reset = getattr(block, 'init_weights', None) or getattr(block, 'reset_parameters', None)
            if not block._plugin_loaded and reset is not None:
                reset()

    def train(self, mode: bool = True) -> nn.Module:
        type(self.module).train(self.module, mode)
        for block in (self.module.get_submodule(path) for path in self.paths):
            params = list(block.parameters())
            if len(block._plugin_trainable) == len(params) and any(p.requires_grad for p in params):
                for param, flag in zip(params, block._plugin_trainable):
                    param.requires_grad_(flag)
        return self.module


def add_plugins(module: nn.Module, plugins: Sequence[Optional[dict]], probe_shape: Optional[Sequence[int]] = None,
                default: str = 'stages', init_cfg: Union[dict, List[dict], None] = None) -> List[str]:
    """Insert ``plugins`` into the built backbone ``module`` (:func:`insert`) and make it initialise and train
    with them (:class:`WithBlocks`, ``init_cfg`` after its own initialisation): ``module.plugin_paths`` lists the
    blocks' paths, and a backbone that froze stages in its ``__init__`` (before the blocks existed) freezes them
    again, its blocks inside. Returns the paths."""
    module.plugin_paths = paths = insert(module, plugins, probe_shape, default) if plugins is not None else []
    if paths:
        glue = WithBlocks(module, paths, [init_cfg] if isinstance(init_cfg, dict) else init_cfg)
        if hasattr(type(module), 'init_weights') or init_cfg:
            module.init_weights = glue.init_weights
        module.train = glue.train
        frozen = getattr(module, 'frozen_stages', -1)
        if isinstance(frozen, int) and frozen >= 0 and hasattr(module, '_freeze_stages'):
            module._freeze_stages()
    return paths


__all__ = ['add_plugins', 'insert', 'plan', 'decide', 'Placement', 'Decision', 'WithBlocks', 'outer_captures']
