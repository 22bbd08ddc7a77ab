"""Plugin entries: the fields a user writes, checked one by one, each error naming ``plugins[i]`` and the field.

An entry names a block (``cfg``) and one way of saying where it goes: residual stages (``stages``, ``blocks``,
``position``, ``within``), ``after`` any submodule, or in place of one (``replace``, ``residual``); every entry may
add ``layout`` and ``name``. ``docs/plugins.md`` describes every field.

A backbone whose own ``plugins`` argument implements mmdetection's design (:func:`native_form`) builds the entries
written in that form itself; :func:`check_native` checks them first with the exceptions upstream raises.
This module turns entries into checked fields; :mod:`snl_mm.plugins.insert` turns them into placements.
"""
import difflib
import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmcv.cnn.bricks.plugin import infer_abbr

from snl_mm.blocks import registered_blocks
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import is_int
from .layouts import Layout, layout_from_config

#: every position of a residual block an entry may name; a residual-block class offers a subset.
POSITIONS: Tuple[str, ...] = ('after_block', 'after_conv1', 'after_conv2', 'after_conv3')
#: fields of an entry that addresses residual stages.
ENTRY_KEYS: Tuple[str, ...] = ('cfg', 'stages', 'position', 'blocks')
#: fields of an entry that names a submodule.
AFTER_ENTRY_KEYS: Tuple[str, ...] = ('cfg', 'after')
#: fields every entry may add.
COMMON_KEYS: Tuple[str, ...] = ('layout', 'name')
#: every field, by way of addressing.
ADDRESSINGS: Dict[str, Tuple[str, ...]] = {
    'stages': ENTRY_KEYS + ('within', ) + COMMON_KEYS,
    'after': AFTER_ENTRY_KEYS + COMMON_KEYS,
    'replace': ('cfg', 'replace', 'residual') + COMMON_KEYS,
}
#: the fields of an entry in mmdetection's own form (its ResNet's ``plugins``)
NATIVE_KEYS: Tuple[str, ...] = ('cfg', 'position', 'stages')

PluginEntries = Optional[Sequence[dict]]


class UnknownPluginError(KeyError):
    """An unknown block type; a KeyError (as registries raise) that prints its message unquoted."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def where(index: int) -> str:
    return f'plugins[{index}]'


def addressing(entry: Any, index: int, default: str = 'stages') -> str:
    """Which way ``entry`` addresses its place (``'stages'``, ``'after'``, ``'replace'``); its fields checked."""
    if not isinstance(entry, dict):
        raise TypeError(f'{where(index)} must be a dict with keys {ENTRY_KEYS}, got {type(entry).__name__}')
    kinds = [k for k in ('after', 'replace') if k in entry]
    if len(kinds) > 1:
        raise ValueError(f"{where(index)}: give one of the fields 'after' and 'replace', not both")
    kind = kinds[0] if kinds else default
    valid = ADDRESSINGS[kind]
    unknown = [key for key in entry if key not in valid]
    if unknown:
        shown = valid[:len(ENTRY_KEYS)] if kind == 'stages' else valid[:2] if kind == 'after' else valid
        raise ValueError(f'{where(index)}: unknown field(s) {unknown}; valid fields: {shown} (and '
                         f"{tuple(k for k in valid if k not in shown)})")
    if 'cfg' not in entry:
        raise ValueError(f"{where(index)}: field 'cfg' is required (the block config, e.g. "
                         f"dict(type='SNLBlock', reduction=2)); valid fields: {valid}")
    return kind


def resolve_type(cfg: Any, index: int) -> type:
    """Check ``cfg`` and return the class it names (in the current default scope, then the root)."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"{where(index)}: field 'cfg' must be a dict with a 'type', e.g. "
                        f"dict(type='SNLBlock', reduction=2), got {cfg!r}")
    block_type = cfg['type']
    if inspect.isclass(block_type):
        return block_type
    if not isinstance(block_type, str):
        raise TypeError(f"{where(index)}: field 'cfg.type' must be a registered name or a class, got "
                        f'{block_type!r}')
    with ROOT_MODELS.switch_scope_and_registry(None) as registry:
        cls = registry.get(block_type)
    if cls is None:
        close = difflib.get_close_matches(block_type, list(ROOT_MODELS.module_dict), n=3)
        hint = f'; did you mean {close}?' if close else ''
        raise UnknownPluginError(
            f"{where(index)}: field 'cfg.type' names an unknown block {block_type!r}{hint} Registered "
            f'blocks: {list(registered_blocks())}, or any plugin layer registered in mmengine\'s root MODELS '
            "(mmcv's NonLocal2d, ContextBlock, GeneralizedAttention...); did you `import snl_mm` "
            "(custom_imports=dict(imports=['snl_mm']))?")
    return cls


def block_name(cls: type, entry: dict, index: int) -> str:
    """The child name of the block: the entry's ``name``, else the class's abbreviation plus ``cfg.postfix``."""
    postfix = entry['cfg'].get('postfix', '')
    if not isinstance(postfix, (int, str)) or isinstance(postfix, bool):
        raise TypeError(f"{where(index)}: field 'cfg.postfix' must be an int or a str, got {postfix!r}")
    name = entry.get('name')
    if name is None:
        return infer_abbr(cls) + str(postfix)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{where(index)}: field 'name' must be a Python identifier (the block's key in the "
                         f"state dict, e.g. 'non_local_block'), got {name!r}")
    return name


def entry_layout(entry: dict, index: int) -> Optional[Layout]:
    """The entry's explicit ``layout``, or None (the backbone's, else what the build-time check observes)."""
    spec = entry.get('layout')
    return None if spec is None else layout_from_config(spec, where(index))


def normalise_stages(stages, num_stages: int, index: int, stage_names: Sequence[str]) -> List[bool]:
    if stages is None:
        return [True] * num_stages
    if not isinstance(stages, (tuple, list)) or not all(isinstance(s, bool) for s in stages):
        raise TypeError(f"{where(index)}: field 'stages' must be a tuple of {num_stages} bools (one per "
                        f'stage {tuple(stage_names)}), got {stages!r}')
    if len(stages) != num_stages:
        raise ValueError(f"{where(index)}: field 'stages' has {len(stages)} entries but the backbone has "
                         f'{num_stages} stages {tuple(stage_names)}; give one bool per stage, e.g. '
                         f'{tuple(i == num_stages - 2 for i in range(num_stages))}')
    if not any(stages):
        raise ValueError(f"{where(index)}: field 'stages' selects no stage ({tuple(stages)}); valid: a "
                         f'tuple of {num_stages} bools with at least one True')
    return list(stages)


def normalise_blocks(blocks, selected: List[bool], depths: Sequence[int], index: int,
                     stage_names: Sequence[str]) -> List[List[int]]:
    """Per stage, the sorted non-negative indices of the chosen residual blocks."""
    num_stages = len(depths)
    if blocks is None:
        per_stage = [list(range(d)) if sel else [] for sel, d in zip(selected, depths)]
    elif isinstance(blocks, (tuple, list)) and all(is_int(b) for b in blocks):
        if not blocks:
            raise ValueError(f"{where(index)}: field 'blocks' is empty and selects no block; valid: None "
                             '(all blocks), a tuple of indices for every chosen stage, or one tuple per stage')
        per_stage = [list(blocks) if sel else [] for sel in selected]
    elif isinstance(blocks, (tuple, list)) and all(isinstance(b, (tuple, list)) for b in blocks):
        if len(blocks) != num_stages:
            raise ValueError(f"{where(index)}: field 'blocks' gives {len(blocks)} per-stage tuples but the "
                             f'backbone has {num_stages} stages {tuple(stage_names)}; valid: one tuple of '
                             f'indices per stage (stage depths {tuple(depths)})')
        for stage, (sel, chosen) in enumerate(zip(selected, blocks)):
            if not all(is_int(b) for b in chosen):
                raise TypeError(f"{where(index)}: field 'blocks' must hold integer block indices, got "
                                f'{tuple(chosen)!r} for stage {stage}')
            if chosen and not sel:
                raise ValueError(f"{where(index)}: field 'blocks' picks blocks {tuple(chosen)} in stage "
                                 f"{stage} ({stage_names[stage]}) but field 'stages' leaves that stage out")
        per_stage = [list(chosen) for chosen in blocks]
        if not any(per_stage):
            raise ValueError(f"{where(index)}: field 'blocks' selects no block ({blocks!r})")
    else:
        raise TypeError(f"{where(index)}: field 'blocks' must be None (all blocks), a tuple of integer "
                        f'indices, or one tuple of indices per stage, got {blocks!r}')

    result = []
    for stage, (chosen, depth) in enumerate(zip(per_stage, depths)):
        for b in chosen:
            if not -depth <= b < depth:
                raise ValueError(
                    f"{where(index)}: field 'blocks' index {b} is out of range for stage {stage} "
                    f'({stage_names[stage]}) with {depth} residual blocks; valid indices: '
                    f'{-depth}..{depth - 1}')
        normalised = sorted(b % depth for b in chosen)
        if len(set(normalised)) != len(normalised):
            raise ValueError(
                f"{where(index)}: field 'blocks' names a block of stage {stage} ({stage_names[stage]}) "
                f'twice: {tuple(chosen)} (indices, not a 0/1 mask: mmaction2\'s non_local=(0, 1, 0, 1) '
                'is blocks=(1, 3))')
        result.append(normalised)
    return result


def check_position(position: Any, index: int) -> str:
    if position not in POSITIONS:
        raise ValueError(f"{where(index)}: field 'position' is {position!r}; valid positions: {POSITIONS}")
    return position


def check_path(path: Any, names: Sequence[str], field: str, index: int, model_name: str,
               top: Sequence[str]) -> str:
    """``path`` when it names a submodule, else an error with close matches and the top-level submodules."""
    if isinstance(path, str) and path in names:
        return path
    close = difflib.get_close_matches(str(path), names, n=5)
    example = f"'{top[-1]}.0'" if top else "'layer1'"
    raise ValueError(
        f"{where(index)}: field '{field}' is {path!r}, which names no submodule of {model_name}; " +
        (f'close matches: {close}; ' if close else '') +
        f'top-level submodules: {list(top)} (any path of named_modules(), e.g. {example})')


def native_form(entry: Any, positions: Sequence[str]) -> bool:
    """Whether ``entry`` is in the form a class's own ``plugins`` builds (mmdetection's design implementing
    ``positions``): upstream's fields only, with a position that is not one only the package offers."""
    return bool(positions) and isinstance(entry, dict) and set(entry) <= set(NATIVE_KEYS) and 'position' in entry \
        and entry['position'] not in set(POSITIONS) - set(positions)


def check_native(entries: Sequence[dict], owner: str, positions: Sequence[str], num_stages: int,
                 takes_plugins: bool) -> None:
    """Check entries in upstream's own form before upstream builds them: where upstream would fail, fail with its
    exception type (AssertionError; a KeyError for an unknown type) and a message naming the entry and field.

    Args:
        entries: ``(index, entry)`` pairs, ``index`` the entry's place in the config's list.
        owner (str): the class, for messages (``'mmseg ResNetV1c'``).
        positions: the positions upstream implements.
        num_stages (int): the backbone's stages (one flag of ``stages`` each).
        takes_plugins (bool): whether the residual blocks of this depth take plugins at all.
    """
    for index, entry in entries:
        if not takes_plugins:
            raise AssertionError(f'{where(index)}: {owner} takes no plugins of its own at this depth: its '
                                 "BasicBlock has none (upstream); use depth >= 50, or the package's fields "
                                 "(blocks=..., position='after_block', or after='layer3.1'), which insert blocks "
                                 'after its residual blocks')
        resolve_type(entry['cfg'], index)
        if entry['position'] not in positions:
            raise AssertionError(f"{where(index)}: field 'position' is {entry['position']!r}, which {owner} does "
                                 f'not offer; valid positions: {tuple(positions)} (and, with block indices, '
                                 f'{tuple(p for p in POSITIONS if p not in positions)})')
        stages = entry.get('stages')
        if stages is not None and len(stages) != num_stages:
            raise AssertionError(f"{where(index)}: field 'stages' has {len(stages)} entries but {owner} has "
                                 f'{num_stages} stages; give one flag per stage')
