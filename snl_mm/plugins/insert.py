"""One insertion mechanism for every backbone: plan, observe, build, attach, verify.

:func:`insert` takes a backbone and its plugin entries (:mod:`snl_mm.plugins.entries`) and

1. **plans** each entry into placements: which module's call carries the block (a residual block's site, the
   module an ``after`` path names, the module a ``replace`` path names), which module holds its keys, and the
   layout the backbone's adapter declares there;
2. **observes** one dry forward (:mod:`snl_mm.plugins.probe`): every placement's module must run exactly once, and
   what it produces gives the block's ``in_channels`` (an explicit ``cfg.in_channels`` must agree) and, where no
   layout is declared, the layout (a 2-D or 3-D map; anything else must be declared by the entry);
3. **builds** every block before touching the backbone, so that a failing entry leaves it unchanged;
4. **attaches** them (:mod:`snl_mm.plugins.sites`) without renaming one upstream key;
5. **verifies** with a second dry forward that every block ran exactly once on the channels it was built for.

Any failure stops the build with one error naming ``plugins[i]``, the place and what was observed.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import build_plugin_layer
from torch.nn.modules.batchnorm import _NormBase

from . import entries as E
from .layouts import Capture, FramesLayout, Layout, MapLayout, describe_value, probing
from .probe import count_calls, probe_shapes, run_first
from .sites import attach, block_sites, declared_layout, replace, residual_stages

#: attention modules that may be replaced, and whether their output already includes their input
_REPLACEABLE: Dict[type, bool] = {}


def register_replaceable(*classes: type, residual: bool) -> None:
    """Declare modules a block may replace (``replace=path``): ``residual=True`` when the module returns its input
    plus its update (the block then replaces it as it is), False when its caller adds the input (a branch)."""
    for cls in classes:
        _REPLACEABLE[cls] = residual


@dataclass
class Placement:
    """One block to insert, planned from ``plugins[index]``."""

    index: int
    cfg: dict
    name: str
    where: str
    host_path: str
    target_path: str
    when: str
    layout: Optional[Layout]
    branch: bool = False
    channels: int = field(default=0)


def _path(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix and name else prefix or name


def _plan_stages(backbone: nn.Module, entry: dict, index: int, name: str) -> List[Placement]:
    within = entry.get('within')
    if within is not None:
        names = [n for n, _ in backbone.named_modules() if n]
        E.check_path(within, names, 'within', index, type(backbone).__name__,
                     [n for n, _ in backbone.named_children()])
    root = backbone.get_submodule(within) if within else backbone
    stages = residual_stages(root)
    stage_names = [n for n, _ in stages]
    position = E.check_position(entry.get('position', 'after_block'), index)
    selected = E.normalise_stages(entry.get('stages'), len(stages), index, stage_names)
    chosen = E.normalise_blocks(entry.get('blocks'), selected, [len(s) for _, s in stages], index, stage_names)
    placements = []
    for (stage_name, stage), indices in zip(stages, chosen):
        for b in indices:
            block = stage[b]
            path = _path(within or '', f'{stage_name}.{b}')
            sites = block_sites(block)
            if sites is None:
                raise TypeError(f'{E.where(index)}: {path} is a {type(block).__name__}, a residual block '
                                'class without registered positions (snl_mm.plugins.register_sites)')
            if position not in sites:
                raise ValueError(f"{E.where(index)}: field 'position' is {position!r} but {path} is a "
                                 f'{type(block).__name__}, which offers {tuple(sites)}')
            site = sites[position]
            placements.append(Placement(index, entry['cfg'], name, f'{path} ({position})', path,
                                        _path(path, site.module), site.when, E.entry_layout(entry, index)))
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
    names = [n for n, _ in backbone.named_modules() if n]
    top = [n for n, _ in backbone.named_children()]
    path = E.check_path(entry.get(kind), names, kind, index, type(backbone).__name__, top)
    target = backbone.get_submodule(path)
    if isinstance(target, (_NormBase, nn.GroupNorm, nn.LayerNorm)) and kind == 'after':
        raise ValueError(f"{E.where(index)}: field 'after' names {path!r}, a norm layer "
                         f'({type(target).__name__}); SyncBN conversion and conv-BN fusion replace norm '
                         'layers, which would drop the block: name the module after it')
    layout = E.entry_layout(entry, index)
    if kind == 'after':
        hooked = _last_leaf(backbone, path)
        return Placement(index, entry['cfg'], name, f'the output of {path}', hooked, hooked, 'post', layout)
    residual = entry.get('residual')
    if residual is None:
        residual = next((r for cls, r in _REPLACEABLE.items() if isinstance(target, cls)), None)
    if not isinstance(residual, bool):
        raise ValueError(f"{E.where(index)}: field 'replace' names {path!r} ({type(target).__name__}); say whether "
                         "its output includes its input: residual=True (the block replaces it as it is) or "
                         "residual=False (its caller adds the input: the block's update replaces it)")
    return Placement(index, entry['cfg'], name, f'in place of {path}', path, path, 'replace', layout,
                     branch=not residual)


def plan(backbone: nn.Module, plugins: Sequence[dict], default: str = 'stages') -> List[Placement]:
    """Check every entry and plan its placements (nothing is changed)."""
    placements: List[Placement] = []
    taken: Dict[Tuple[str, str], int] = {}
    for index, entry in enumerate(E.check_entry_list(plugins)):
        kind = E.addressing(entry, index, default)
        cls = E.resolve_type(entry['cfg'], index)
        name = E.block_name(cls, entry, index)
        if kind == 'stages':
            planned = _plan_stages(backbone, entry, index, name)
        else:
            planned = [_plan_path(backbone, entry, index, name, kind)]
        for p in planned:
            host = backbone.get_submodule(p.host_path)
            if (p.host_path, name) in taken:
                raise ValueError(
                    f"{E.where(index)}: a block named {name!r} is already inserted at {p.host_path} by "
                    f"{E.where(taken[p.host_path, name])}; give one of them a different 'cfg.postfix' "
                    "(e.g. postfix='_2') or 'name'")
            if p.when != 'replace' and hasattr(host, name):
                raise ValueError(f"{E.where(index)}: {p.host_path} already has an attribute {name!r}; set "
                                 "'cfg.postfix' or 'name' to name the inserted block differently")
            taken[p.host_path, name] = index
        placements += planned
    return placements


def _observe(backbone: nn.Module, placements: List[Placement], shapes: Sequence[Sequence[int]]) -> Tuple[int, ...]:
    """The dry forward: each placement's module runs once; its value gives the layout and the channels. Returns the
    input shape it ran on (the first of ``shapes`` the backbone takes)."""
    watched = {i: backbone.get_submodule(p.target_path) for i, p in enumerate(placements)}
    shape, observers = run_first(backbone, shapes, watched)
    for i, p in enumerate(placements):
        seen = observers[i]
        if seen.calls != 1:
            raise ValueError(
                f'{E.where(p.index)}: {p.where} runs {seen.calls} times in one forward of '
                f'{type(backbone).__name__} (input {tuple(shape)}); a block there would run '
                f'{"never" if seen.calls == 0 else f"{seen.calls} times"}: name a module that runs exactly '
                'once (a residual block, a stage\'s last block, a layer)')
        value = seen.args[0] if p.when in ('pre', 'replace') else seen.output
        if p.layout is None:
            p.layout = declared_layout(backbone, p.target_path) or _inferred_layout(value, p, shape)
        try:
            with probing(shape[0]):
                features = p.layout.features(value)
                block_map, _ = p.layout.to_map(features, seen.args, seen.output)
        except (ValueError, RuntimeError, TypeError) as err:
            raise ValueError(f'{E.where(p.index)}: at {p.where} the value is {describe_value(value)}, which layout '
                             f'{p.layout.describe()} cannot take: {err}') from err
        if p.when == 'replace' and describe_value(seen.output) != describe_value(seen.args[0]):
            raise ValueError(f'{E.where(p.index)}: {p.where}: the module maps {describe_value(seen.args[0])} to '
                             f'{describe_value(seen.output)}; a block keeps the shape, so it can only replace a '
                             'module that does too')
        p.channels = int(block_map.shape[1])
        given = p.cfg.get('in_channels')
        if given is not None and given != p.channels:
            raise ValueError(f"{E.where(p.index)}: field 'cfg' gives in_channels={given!r}, but the block at "
                             f'{p.where} receives {p.channels} channels (observed: {describe_value(value)}, '
                             f'layout {p.layout.describe()}); leave in_channels out or set it to {p.channels}')
    return shape


def _inferred_layout(value, p: Placement, shape: Sequence[int]) -> Layout:
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


def _build(p: Placement) -> nn.Module:
    """Build one block with the observed ``in_channels``; a failure names the entry and the place."""
    cfg = dict(p.cfg)
    postfix = cfg.pop('postfix', '')
    cfg['in_channels'] = p.channels
    try:
        return build_plugin_layer(cfg, postfix=postfix)[1]
    except (ValueError, TypeError, KeyError, AssertionError) as err:
        message = (f"{E.where(p.index)}: field 'cfg' ({cfg.get('type')!r}) cannot be built at {p.where} with "
                   f'in_channels={p.channels}: {err}')
        try:
            new = type(err)(message)
        except TypeError:
            new = ValueError(message)
        raise new from err


def _mark_loaded(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook of an inserted block: remember that a checkpoint provided its weights."""
    if any(key.startswith(prefix) for key in state_dict):
        module._plugin_loaded = True


def _install_captures(backbone: nn.Module, layouts: Sequence[Layout]) -> None:
    installed = backbone.__dict__.setdefault('_snl_mm_captures', [])
    for layout in layouts:
        for capture in layout.captures():
            if not any(c is capture for c in installed):
                module = backbone.get_submodule(capture.path)
                if capture.before:
                    module.register_forward_pre_hook(capture)
                else:
                    module.register_forward_hook(capture)
                installed.append(capture)


def insert(backbone: nn.Module, plugins: Sequence[dict], shape: Optional[Sequence[int]] = None,
           default: str = 'stages') -> List[str]:
    """Check the entries, insert their blocks into ``backbone`` and verify them (see the module docstring).

    Args:
        backbone (nn.Module): any backbone; stage addressing needs residual stages (``res_layers`` or an adapter).
        plugins (Sequence[dict]): plugin entries (:mod:`snl_mm.plugins.entries`).
        shape (Sequence[int], optional): input shape of the build-time check (the adapter's or an image by
            default).
        default (str): the addressing of entries without ``after`` or ``replace``: ``'stages'``.

    Returns:
        list[str]: module paths of the inserted blocks, in the order of the entries.
    """
    placements = plan(backbone, plugins, default)
    if not placements:
        return []
    for p in placements:  # declared layouts are known before the probe (their captures must run in it)
        p.layout = p.layout or declared_layout(backbone, p.target_path)
    _install_captures(backbone, [p.layout for p in placements if p.layout is not None])
    shape = _observe(backbone, placements, probe_shapes(backbone, shape))
    built = [_build(p) for p in placements]
    paths = []
    for p, block in zip(placements, built):
        if p.when == 'replace':
            parent_path, _, child = p.target_path.rpartition('.')
            replace(backbone.get_submodule(parent_path), child, p.name, block, p.layout, p.branch, p.target_path)
        else:
            attach(backbone.get_submodule(p.host_path), p.name, block, backbone.get_submodule(p.target_path),
                   p.when, p.layout)
        block._plugin_loaded = False
        block._plugin_trainable = [param.requires_grad for param in block.parameters()]
        block.register_load_state_dict_pre_hook(_mark_loaded)
        paths.append(_path(p.host_path, p.name))
        if isinstance(p.layout, FramesLayout) and p.layout.num_segments == 'recognizer':
            backbone.__dict__.setdefault('_snl_mm_runtime_frames', []).append(p.layout)
    _verify(backbone, placements, built, shape)
    return paths


def _verify(backbone: nn.Module, placements: List[Placement], blocks: List[nn.Module],
            shape: Sequence[int]) -> None:
    for p, block, counter in zip(placements, blocks, count_calls(backbone, shape, blocks)):
        if counter.calls != 1 or counter.channels[:1] != [p.channels]:
            raise ValueError(f'{E.where(p.index)}: the block inserted at {p.where} ran {counter.calls} times in the '
                             f'build-time check (channels seen: {counter.channels}, built for {p.channels}); '
                             'a block must run exactly once per forward')


def freeze_like_upstream(model: nn.Module) -> None:
    """Run the backbone's ``_freeze_stages`` again when it freezes anything (``frozen_stages >= 0``): its
    ``__init__`` froze its stages before the blocks existed, and blocks in a frozen stage are frozen with it."""
    frozen = getattr(model, 'frozen_stages', -1)
    if isinstance(frozen, int) and frozen >= 0 and hasattr(model, '_freeze_stages'):
        model._freeze_stages()


def keep_blocks_trainable(model: nn.Module, paths: Sequence[str]) -> None:
    """After the backbone's ``train()``: a block is frozen as a whole or trained as it was built.

    Backbones freeze their pretrained norms on ``train()`` (mmaction2's CSN with ``bn_frozen``: every BN's
    parameters stop requiring gradients). A block's output norm starts at zero; frozen, the block would stay the
    identity for the whole run. So a block with some parameters still trainable (only its norm was caught) gets
    the flags it was built with back; a block in a frozen stage (all its parameters frozen) stays frozen.
    """
    for path in paths:
        block = model.get_submodule(path)
        params = list(block.parameters())
        flags = getattr(block, '_plugin_trainable', None)
        if flags is None or len(flags) != len(params):
            continue
        if any(p.requires_grad for p in params):
            for param, flag in zip(params, flags):
                param.requires_grad_(flag)


def init_inserted(model: nn.Module, paths: Sequence[str], upstream_init: Callable[[], None]) -> None:
    """Run the upstream initialisation, then make every inserted block the identity again.

    Upstream initialisations re-initialise every norm of the model (mmpretrain's ResNet sets all BN weights
    to 1), which breaks a block's identity init; each inserted block's ``init_weights()`` (or, for a plain
    torch module, ``reset_parameters()``) restores it. A block whose weights a checkpoint loaded during the
    upstream initialisation (``init_cfg=dict(type='Pretrained')`` of a network trained with the block) keeps
    them.
    """
    blocks = [model.get_submodule(path) for path in paths]
    for block in blocks:
        block._plugin_loaded = False
    upstream_init()
    for block in blocks:
        if block._plugin_loaded:
            continue
        reset = getattr(block, 'init_weights', None) or getattr(block, 'reset_parameters', None)
        if reset is not None:
            reset()


__all__ = ['insert', 'plan', 'init_inserted', 'keep_blocks_trainable', 'register_replaceable', 'Placement',
           'Capture']
