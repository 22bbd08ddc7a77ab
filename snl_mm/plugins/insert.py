"""One insertion mechanism for every backbone: plugin entries, stage/block addressing, validation, hooks.

A plugin entry puts blocks (``SNLBlock``, ``NLBlock``, mmcv's ``ContextBlock``... anything registered in
mmengine's root ``MODELS``) into a backbone that has residual stages::

    dict(cfg=dict(type='SNLBlock', reduction=2),   # the block; in_channels comes from the backbone
         stages=(False, False, True, False),       # which stages (default: all)
         position='after_block',                   # or 'after_conv1' | 'after_conv2' | 'after_conv3'
         blocks=(-2,))                             # which residual blocks (default: all)

How a block is attached, without changing one upstream state-dict key:

* It becomes a child of the residual block it belongs to, named as mmdetection names plugins: the block's
  abbreviation (``_abbr_``, e.g. ``snl_block``) plus ``cfg['postfix']``. Its keys read
  ``layer3.4.snl_block.theta.weight``; the residual block's own keys are untouched.
* A forward hook applies it where the entry says (a :class:`Site`): ``after_block`` on the residual block's
  output; ``after_convK`` inside the residual branch, after conv K and the norm/activation that follow it, as
  mmdetection's ``ResNet(plugins=...)``. The hooks sit on the residual block, on a convolution or on the
  block's drop-path, never on a norm layer, so SyncBN conversion and conv-BN fusion keep them, and they run
  inside ``torch.utils.checkpoint`` when the residual block uses ``with_cp=True``.

Which submodule serves which position is declared per residual-block class with :func:`register_sites`
(subclasses inherit it), next to the backbone that uses the class.
"""
import difflib
import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import build_plugin_layer
from mmcv.cnn.bricks.plugin import infer_abbr
from torch import Tensor
from torch.nn.modules.batchnorm import _NormBase

from snl_mm.registry import ROOT_MODELS

#: every position a plugin entry may name; a residual-block class offers a subset (see :func:`register_sites`).
POSITIONS: Tuple[str, ...] = ('after_block', 'after_conv1', 'after_conv2', 'after_conv3')
#: keys of a plugin entry of a backbone with residual stages.
ENTRY_KEYS: Tuple[str, ...] = ('cfg', 'stages', 'position', 'blocks')
#: keys of a :class:`~snl_mm.plugins.PluginBackbone` entry.
AFTER_ENTRY_KEYS: Tuple[str, ...] = ('cfg', 'after')

PluginEntries = Optional[Sequence[dict]]


@dataclass(frozen=True)
class Site:
    """Where, inside one residual block, a position is realised.

    Args:
        module (str): path of the submodule, relative to the residual block, that carries the hook; ``''`` is
            the residual block itself.
        when (str): ``'post'``: the plugin transforms that submodule's output; ``'pre'``: its first input.
        channels (int): channels of the feature map there, the plugin's ``in_channels``.
    """

    module: str
    when: str
    channels: int


SiteResolver = Callable[[nn.Module], Dict[str, Site]]
_SITE_RESOLVERS: Dict[type, SiteResolver] = {}


def register_sites(*block_classes: type) -> Callable[[SiteResolver], SiteResolver]:
    """Declare the positions a residual-block class offers.

    The decorated function maps one residual block to ``{position: Site}``; subclasses of the given classes
    use it too unless they register their own.

    Args:
        *block_classes (type): residual-block classes (mmpretrain's ``Bottleneck``, mmaction2's
            ``Bottleneck3d``...).

    Returns:
        The decorator.
    """

    def decorator(resolver: SiteResolver) -> SiteResolver:
        for cls in block_classes:
            _SITE_RESOLVERS[cls] = resolver
        return resolver

    return decorator


def block_sites(block: nn.Module) -> Optional[Dict[str, Site]]:
    """The positions offered by ``block`` (``{position: Site}``), or None for an unknown block class."""
    for cls in type(block).__mro__:
        if cls in _SITE_RESOLVERS:
            return _SITE_RESOLVERS[cls](block)
    return None


# -- hooks -------------------------------------------------------------------------------------------------
class PluginForwardHook:
    """Forward hook: ``output -> plugin(output)``.

    A callable object rather than a closure: ``copy.deepcopy`` of the model (EMA, SWA) maps ``plugin`` to the
    copy's own block, and the model stays picklable.
    """

    def __init__(self, plugin: nn.Module) -> None:
        self.plugin = plugin

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return self.plugin(output)


class PluginForwardPreHook:
    """Forward pre-hook: the first input ``x -> plugin(x)``, other inputs unchanged."""

    def __init__(self, plugin: nn.Module) -> None:
        self.plugin = plugin

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (self.plugin(args[0]), *args[1:])


def _mark_loaded(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook of an inserted block: remember that a checkpoint provided its weights."""
    if any(key.startswith(prefix) for key in state_dict):
        module._plugin_loaded = True


def attach(host: nn.Module, name: str, plugin: nn.Module, site: nn.Module, when: str) -> None:
    """Make ``plugin`` the child ``name`` of ``host`` and apply it at ``site``.

    Args:
        host (nn.Module): module whose state dict gets the plugin's keys under ``name``.
        name (str): child name (must be free in ``host``).
        plugin (nn.Module): the block, ``(B, C, *S) -> (B, C, *S)``.
        site (nn.Module): module whose output (``when='post'``) or first input (``when='pre'``) goes through
            the plugin.
        when (str): ``'post'`` or ``'pre'``.
    """
    host.add_module(name, plugin)
    if when == 'post':
        site.register_forward_hook(PluginForwardHook(plugin))
    elif when == 'pre':
        site.register_forward_pre_hook(PluginForwardPreHook(plugin))
    else:
        raise ValueError(f"when must be 'post' or 'pre', got {when!r}")
    plugin._plugin_loaded = False
    plugin.register_load_state_dict_pre_hook(_mark_loaded)


def init_inserted(model: nn.Module, paths: Sequence[str], upstream_init: Callable[[], None]) -> None:
    """Run the upstream initialisation, then make every inserted block the identity again.

    Upstream initialisations re-initialise every norm of the model (mmpretrain's ResNet sets all BN weights
    to 1), which breaks a block's identity init; each inserted block's ``init_weights()`` (or, for a plain
    torch module, ``reset_parameters()``) restores it. A block
    whose weights a checkpoint loaded during the upstream initialisation (``init_cfg=dict(type='Pretrained')``
    of a network trained with the block) keeps them.

    Args:
        model (nn.Module): the backbone.
        paths (Sequence[str]): module paths of the inserted blocks, relative to ``model``.
        upstream_init (callable): the upstream ``init_weights`` (bound, no arguments).
    """
    blocks = [model.get_submodule(path) for path in paths]
    for block in blocks:
        block._plugin_loaded = False
    upstream_init()
    for block in blocks:
        if block._plugin_loaded:
            continue
        # mmengine modules re-initialise with init_weights(), plain torch ones (mmcv's ContextBlock) with
        # reset_parameters()
        reset = getattr(block, 'init_weights', None) or getattr(block, 'reset_parameters', None)
        if reset is not None:
            reset()


# -- entries -----------------------------------------------------------------------------------------------
class UnknownPluginError(KeyError):
    """An unknown block type; a KeyError (as registries raise) that prints its message unquoted."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def _where(index: int) -> str:
    return f'plugins[{index}]'


def snl_mm_block_names() -> List[str]:
    """Names of the nonlocal blocks of this package registered in mmengine's root MODELS."""
    return sorted(name for name, cls in ROOT_MODELS.module_dict.items()
                  if getattr(cls, '__module__', '').startswith('snl_mm.blocks'))


def _check_entry_keys(entry, index: int, valid: Tuple[str, ...]) -> None:
    if not isinstance(entry, dict):
        raise TypeError(f'{_where(index)} must be a dict with keys {valid}, got {type(entry).__name__}')
    unknown = [key for key in entry if key not in valid]
    if unknown:
        raise ValueError(f'{_where(index)}: unknown field(s) {unknown}; valid fields: {valid}')
    if 'cfg' not in entry:
        raise ValueError(f"{_where(index)}: field 'cfg' is required (the block config, e.g. "
                         f"dict(type='SNLBlock', reduction=2)); valid fields: {valid}")


def _resolve_type(cfg, index: int) -> type:
    """Check ``cfg`` and return the class it names."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"{_where(index)}: field 'cfg' must be a dict with a 'type', e.g. "
                        f"dict(type='SNLBlock', reduction=2), got {cfg!r}")
    if 'in_channels' in cfg:
        raise ValueError(f"{_where(index)}: field 'cfg' must not give 'in_channels' "
                         f"(got in_channels={cfg['in_channels']!r}): the backbone passes the channels of "
                         'the position each block is inserted at')
    block_type = cfg['type']
    if inspect.isclass(block_type):
        return block_type
    if not isinstance(block_type, str):
        raise TypeError(f"{_where(index)}: field 'cfg.type' must be a registered name or a class, got "
                        f'{block_type!r}')
    with ROOT_MODELS.switch_scope_and_registry(None) as registry:
        cls = registry.get(block_type)
    if cls is None:
        close = difflib.get_close_matches(block_type, list(ROOT_MODELS.module_dict), n=3)
        hint = f'; did you mean {close}?' if close else ''
        raise UnknownPluginError(
            f"{_where(index)}: field 'cfg.type' names an unknown block {block_type!r}{hint} Registered "
            f'blocks: {snl_mm_block_names()}, or any plugin layer registered in mmengine\'s root MODELS '
            "(mmcv's NonLocal2d, ContextBlock, GeneralizedAttention...); did you `import snl_mm` "
            "(custom_imports=dict(imports=['snl_mm']))?")
    return cls


def _block_name(cls: type, cfg: dict, index: int) -> str:
    postfix = cfg.get('postfix', '')
    if not isinstance(postfix, (int, str)) or isinstance(postfix, bool):
        raise TypeError(f"{_where(index)}: field 'cfg.postfix' must be an int or a str, got {postfix!r}")
    return infer_abbr(cls) + str(postfix)


def _build(cfg: dict, channels: int, index: int, where: str) -> nn.Module:
    """Build one block with ``in_channels=channels``; a failure names the entry and the place."""
    cfg = dict(cfg)
    postfix = cfg.pop('postfix', '')
    try:
        return build_plugin_layer(cfg, postfix=postfix, in_channels=channels)[1]
    except (ValueError, TypeError, KeyError, AssertionError) as err:
        message = (f"{_where(index)}: field 'cfg' ({cfg.get('type')!r}) cannot be built at {where} with "
                   f'in_channels={channels}: {err}')
        try:
            new = type(err)(message)
        except TypeError:
            new = ValueError(message)
        raise new from err


def _free_name(host: nn.Module, name: str, index: int, where: str, taken: Dict[Tuple[int, str], int]) -> None:
    key = (id(host), name)
    if key in taken:
        raise ValueError(
            f"{_where(index)}: a block named {name!r} is already inserted at {where} by "
            f"{_where(taken[key])}; give one of them a different 'cfg.postfix' (e.g. postfix='_2')")
    if hasattr(host, name):
        raise ValueError(f"{_where(index)}: {where} already has an attribute {name!r}; set 'cfg.postfix' "
                         'to name the inserted block differently')
    taken[key] = index


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _normalise_stages(stages, num_stages: int, index: int, stage_names: Sequence[str]) -> List[bool]:
    if stages is None:
        return [True] * num_stages
    if not isinstance(stages, (tuple, list)) or not all(isinstance(s, bool) for s in stages):
        raise TypeError(f"{_where(index)}: field 'stages' must be a tuple of {num_stages} bools (one per "
                        f'stage {tuple(stage_names)}), got {stages!r}')
    if len(stages) != num_stages:
        raise ValueError(f"{_where(index)}: field 'stages' has {len(stages)} entries but the backbone has "
                         f'{num_stages} stages {tuple(stage_names)}; give one bool per stage, e.g. '
                         f'{tuple(i == num_stages - 2 for i in range(num_stages))}')
    if not any(stages):
        raise ValueError(f"{_where(index)}: field 'stages' selects no stage ({tuple(stages)}); valid: a "
                         f'tuple of {num_stages} bools with at least one True')
    return list(stages)


def _normalise_blocks(blocks, selected: List[bool], depths: Sequence[int], index: int,
                      stage_names: Sequence[str]) -> List[List[int]]:
    """Per stage, the sorted non-negative indices of the chosen residual blocks."""
    num_stages = len(depths)
    if blocks is None:
        per_stage = [list(range(d)) if sel else [] for sel, d in zip(selected, depths)]
    elif isinstance(blocks, (tuple, list)) and all(_is_index(b) for b in blocks):
        if not blocks:
            raise ValueError(f"{_where(index)}: field 'blocks' is empty and selects no block; valid: None "
                             '(all blocks), a tuple of indices for every chosen stage, or one tuple per stage')
        per_stage = [list(blocks) if sel else [] for sel in selected]
    elif isinstance(blocks, (tuple, list)) and all(isinstance(b, (tuple, list)) for b in blocks):
        if len(blocks) != num_stages:
            raise ValueError(f"{_where(index)}: field 'blocks' gives {len(blocks)} per-stage tuples but the "
                             f'backbone has {num_stages} stages {tuple(stage_names)}; valid: one tuple of '
                             f'indices per stage (stage depths {tuple(depths)})')
        per_stage = []
        for stage, (sel, chosen) in enumerate(zip(selected, blocks)):
            if not all(_is_index(b) for b in chosen):
                raise TypeError(f"{_where(index)}: field 'blocks' must hold integer block indices, got "
                                f'{tuple(chosen)!r} for stage {stage}')
            if chosen and not sel:
                raise ValueError(f"{_where(index)}: field 'blocks' picks blocks {tuple(chosen)} in stage "
                                 f"{stage} ({stage_names[stage]}) but field 'stages' leaves that stage out")
            per_stage.append(list(chosen))
        if not any(per_stage):
            raise ValueError(f"{_where(index)}: field 'blocks' selects no block ({blocks!r})")
    else:
        raise TypeError(f"{_where(index)}: field 'blocks' must be None (all blocks), a tuple of integer "
                        f'indices, or one tuple of indices per stage, got {blocks!r}')

    result = []
    for stage, (chosen, depth) in enumerate(zip(per_stage, depths)):
        normalised = []
        for b in chosen:
            if not -depth <= b < depth:
                raise ValueError(
                    f"{_where(index)}: field 'blocks' index {b} is out of range for stage {stage} "
                    f'({stage_names[stage]}) with {depth} residual blocks; valid indices: '
                    f'{-depth}..{depth - 1}')
            normalised.append(b % depth)
        if len(set(normalised)) != len(normalised):
            raise ValueError(
                f"{_where(index)}: field 'blocks' names a block of stage {stage} ({stage_names[stage]}) "
                f'twice: {tuple(chosen)} (indices, not a 0/1 mask: mmaction2\'s non_local=(0, 1, 0, 1) '
                'is blocks=(1, 3))')
        result.append(sorted(normalised))
    return result


def residual_stages(backbone: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``[(name, stage)]`` of a backbone with residual stages (``backbone.res_layers`` names them)."""
    names = getattr(backbone, 'res_layers', None)
    if not names:
        raise TypeError(f'{type(backbone).__name__} has no residual stages (no res_layers); insert blocks '
                        "with snl_mm.PluginBackbone(backbone=..., plugins=[dict(cfg=..., after='path')])")
    return [(name, getattr(backbone, name)) for name in names]


def insert_plugins(backbone: nn.Module, plugins: PluginEntries) -> List[str]:
    """Validate the plugin entries and insert their blocks into a backbone with residual stages.

    Args:
        backbone (nn.Module): a backbone whose ``res_layers`` attribute names its stages, each a sequence
            of residual blocks of a class known to :func:`register_sites`.
        plugins (Sequence[dict] | None): entries with the keys of :data:`ENTRY_KEYS`:

            - ``cfg`` (dict, required): the block config; ``type`` names a class of mmengine's root MODELS;
              ``postfix`` (optional) is appended to the block's name as in mmdetection; never
              ``in_channels``.
            - ``stages`` (tuple[bool], optional): one bool per stage; all stages when left out.
            - ``position`` (str, optional): one of :data:`POSITIONS`; default ``'after_block'``.
            - ``blocks`` (tuple, optional): indices (negative allowed) of the residual blocks within each
              chosen stage, or one tuple of indices per stage; all blocks when left out.

    Returns:
        list[str]: module paths of the inserted blocks relative to ``backbone``, in insertion order
        (e.g. ``['layer3.4.snl_block']``).

    Raises:
        ValueError, TypeError, KeyError: a wrong entry, with a message naming ``plugins[i]``, the field and
            the valid choices. Nothing is inserted then.
    """
    if plugins is None:
        return []
    if not isinstance(plugins, (list, tuple)):
        raise TypeError(f'plugins must be a list of dicts with keys {ENTRY_KEYS}, got {type(plugins).__name__}')
    stages = residual_stages(backbone)
    stage_names = [name for name, _ in stages]
    depths = [len(stage) for _, stage in stages]

    planned = []  # (index, cls, cfg, host path, host, site module, when, channels)
    taken: Dict[Tuple[int, str], int] = {}
    for index, entry in enumerate(plugins):
        _check_entry_keys(entry, index, ENTRY_KEYS)
        cfg = entry['cfg']
        cls = _resolve_type(cfg, index)
        name = _block_name(cls, cfg, index)
        position = entry.get('position', 'after_block')
        if position not in POSITIONS:
            raise ValueError(f"{_where(index)}: field 'position' is {position!r}; valid positions: {POSITIONS}")
        selected = _normalise_stages(entry.get('stages'), len(stages), index, stage_names)
        chosen = _normalise_blocks(entry.get('blocks'), selected, depths, index, stage_names)
        for (stage_name, stage), indices in zip(stages, chosen):
            for b in indices:
                block = stage[b]
                path = f'{stage_name}.{b}'
                sites = block_sites(block)
                if sites is None:
                    raise TypeError(f'{_where(index)}: {path} is a {type(block).__name__}, a residual block '
                                    'class without registered positions (snl_mm.plugins.register_sites)')
                if position not in sites:
                    raise ValueError(
                        f"{_where(index)}: field 'position' is {position!r} but {path} is a "
                        f'{type(block).__name__}, which offers {tuple(sites)}')
                site = sites[position]
                _free_name(block, name, index, path, taken)
                planned.append((index, cfg, name, path, position, block, block.get_submodule(site.module), site))

    # build everything first, so that a failing entry leaves the backbone untouched
    built = [(_build(cfg, site.channels, index, f'{path} ({position})'), name, path, host, module, site)
             for index, cfg, name, path, position, host, module, site in planned]
    inserted = []
    for plugin, name, path, host, module, site in built:
        attach(host, name, plugin, module, site.when)
        inserted.append(f'{path}.{name}')
    return inserted


# -- PluginBackbone entries ---------------------------------------------------------------------------------
_CHANNEL_PRESERVING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
                       nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d,
                       nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _own_channels(module: nn.Module) -> Optional[int]:
    for attr in ('out_channels', 'num_features'):
        value = getattr(module, attr, None)
        if _is_index(value):
            return value
    return None


def infer_channels(model: nn.Module, path: str) -> Optional[int]:
    """Channels of the output of ``model.get_submodule(path)``, or None when they cannot be told.

    The module's own ``out_channels`` / ``num_features``; else those of its last submodule that has them
    (a ``Sequential(conv, bn, relu)``, a residual block); for a channel-preserving module (activation,
    pooling, dropout) those of the module before it in its parent.
    """
    module = model.get_submodule(path)
    channels = _own_channels(module)
    if channels is not None:
        return channels
    for sub in reversed(list(module.modules())[1:]):
        channels = _own_channels(sub)
        if channels is not None:
            return channels
    if isinstance(module, _CHANNEL_PRESERVING) and path:
        parent_path, _, name = path.rpartition('.')
        siblings = list(model.get_submodule(parent_path).named_children())
        position = [n for n, _ in siblings].index(name)
        for sibling_name, _ in reversed(siblings[:position]):
            channels = infer_channels(model, f'{parent_path}.{sibling_name}' if parent_path else sibling_name)
            if channels is not None:
                return channels
    return None


def insert_after(model: nn.Module, plugins: PluginEntries) -> List[str]:
    """Insert blocks after named submodules (the entries of :class:`~snl_mm.plugins.PluginBackbone`).

    Args:
        model (nn.Module): the backbone.
        plugins (Sequence[dict]): entries with the keys of :data:`AFTER_ENTRY_KEYS`: ``cfg`` (as in
            :func:`insert_plugins`) and ``after`` (str), the path of the submodule whose output goes through
            the block (``'layer3.4'``, ``'features.10'``). The block becomes its child
            (``layer3.4.snl_block``), so the keys are those :func:`insert_plugins` gives an ``after_block``
            block there.

    Returns:
        list[str]: module paths of the inserted blocks relative to ``model``.
    """
    if not isinstance(plugins, (list, tuple)) or not plugins:
        raise TypeError(f"plugins must be a non-empty list of dicts with keys {AFTER_ENTRY_KEYS}, e.g. "
                        f"[dict(cfg=dict(type='SNLBlock'), after='layer3.4')], got {plugins!r}")
    names = [name for name, _ in model.named_modules() if name]
    planned = []
    taken: Dict[Tuple[int, str], int] = {}
    for index, entry in enumerate(plugins):
        _check_entry_keys(entry, index, AFTER_ENTRY_KEYS)
        cfg = entry['cfg']
        cls = _resolve_type(cfg, index)
        name = _block_name(cls, cfg, index)
        after = entry.get('after')
        if not isinstance(after, str) or after not in names:
            close = difflib.get_close_matches(str(after), names, n=5)
            top = [n for n, _ in model.named_children()]
            raise ValueError(
                f"{_where(index)}: field 'after' is {after!r}, which names no submodule of "
                f'{type(model).__name__}; ' + (f'close matches: {close}; ' if close else '') +
                f"top-level submodules: {top} (any path of named_modules(), e.g. '{top[-1]}.0')")
        target = model.get_submodule(after)
        if isinstance(target, (_NormBase, nn.GroupNorm, nn.LayerNorm)):
            raise ValueError(f"{_where(index)}: field 'after' names {after!r}, a norm layer "
                             f'({type(target).__name__}); SyncBN conversion and conv-BN fusion replace norm '
                             'layers, which would drop the block: name the module after it')
        channels = infer_channels(model, after)
        if channels is None:
            raise ValueError(f"{_where(index)}: field 'after' names {after!r} ({type(target).__name__}), "
                             'whose output channels cannot be told (no out_channels or num_features in it or '
                             'before it); name a convolution, a norm-activation block or a residual block')
        _free_name(target, name, index, after, taken)
        planned.append((index, cfg, name, after, target, channels))
    built = [(_build(cfg, channels, index, f'output of {after}'), name, after, target)
             for index, cfg, name, after, target, channels in planned]
    inserted = []
    for plugin, name, after, target in built:
        attach(target, name, plugin, target, 'post')
        inserted.append(f'{after}.{name}')
    return inserted


__all__ = [
    'POSITIONS', 'ENTRY_KEYS', 'AFTER_ENTRY_KEYS', 'Site', 'register_sites', 'block_sites', 'attach',
    'init_inserted', 'insert_plugins', 'insert_after', 'infer_channels', 'residual_stages',
    'snl_mm_block_names', 'UnknownPluginError', 'PluginForwardHook', 'PluginForwardPreHook',
]
