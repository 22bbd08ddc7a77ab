"""One block of the catalogue in any backbone of the toolboxes, by config, checked: the logic of ``test_matrix.py``.

:func:`middle_entry` chooses a middle position for a backbone by a rule that does not look at its class name:

* a backbone with its own ``plugins=`` (mmseg's and mmdet's ResNets): their entry, ``after_conv2`` of every block
  of the middle stage;
* a backbone with residual stages the mechanism knows: ``after_block`` of the middle block of the middle stage;
* otherwise: ``after=`` the middle module, in the order they run, among the modules of the first three levels that
  run once and produce a map ``(B, C, *S)`` or a value whose layout the backbone's adapter declares.

:func:`check_backbone` builds the backbone from a toolbox's shipped config with that entry (the config path a
user takes: ``model.backbone.plugins=[...]`` on the upstream type) and checks the invariants of the integration
spec (section 4); :data:`MATRIX_BLOCKS` are the blocks the matrix takes in turn.
"""
import copy
import inspect
from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn
from mmengine.hub import get_config
from mmengine.registry import MODELS, init_default_scope
from torch import Tensor

from snl_mm.blocks import find_blocks
from snl_mm.blocks.catalogue import ALL_BLOCK_NAMES
from snl_mm.registry import ROOT_MODELS
from snl_mm.plugins import block_sites, residual_stages
from snl_mm.plugins.insert import outer_captures
from snl_mm.plugins.probe import evaluation, one_clip, probe_input, probe_shapes
from snl_mm.plugins.sites import declared_layout, native_positions
from snl_mm.utils import accepts_argument
from tests.helpers import randomise_, randomise_norms_


def _takes_one_map(cls: type) -> bool:
    """Whether a block's forward needs one tensor, which may be a 2-D or a 3-D map."""
    required = [p for p in list(inspect.signature(cls.forward).parameters.values())[1:]
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1 and {2, 3} <= set(getattr(cls, 'spatial_ranks', (2, 3)))


#: the package's blocks of the catalogue that are registered and take a single 2-D or 3-D map, in its order
MATRIX_BLOCKS = [name for name in ALL_BLOCK_NAMES if ROOT_MODELS.get(name) is not None
                 and _takes_one_map(ROOT_MODELS.get(name))]


def block_config(name: str) -> dict:
    """``name`` with its defaults, its inner width 8 where it has one (a test on a 2-core machine)."""
    cls = ROOT_MODELS.get(name)
    narrow = {key: 8 for key in ('inner_channels', 'key_channels') if accepts_argument(cls, key)}
    return dict(type=name, **narrow)


BLOCK = block_config('SNLBlock')
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def backbone_config(scope: str, config: str, overrides: Dict[str, Any] = None) -> dict:
    """The backbone of a shipped config, without pretrained weights (no network here), with ``overrides``."""
    cfg = get_config(f'{scope}::{config}')
    backbone = copy.deepcopy(cfg.model.backbone)
    for key in ('init_cfg', 'pretrained'):
        if key in backbone:
            backbone[key] = None
    if backbone.get('pretrained2d'):
        backbone['pretrained2d'] = False
    backbone.update(overrides or {})
    return backbone


def _native(backbone: nn.Module) -> bool:
    return accepts_argument(type(backbone), 'plugins') and bool(native_positions(type(backbone)))


def _runs(backbone: nn.Module, shape) -> bool:
    try:
        with evaluation(backbone):
            backbone(probe_input(shape))
    except Exception:  # noqa: BLE001 (a backbone that needs its own input size)
        return False
    return True


def small_probe(backbone: nn.Module) -> tuple:
    """The build-time check's input: 64 x 48 instead of the default 224 x 160 where the backbone takes it (a test
    on a 2-core machine), else the first of the check's own inputs the backbone takes."""
    shapes = probe_shapes(backbone)
    if len(shapes[0]) == 4 and shapes[0][2:] == (224, 160):
        shapes = [(*shapes[0][:2], 64, 48)] + shapes
    return next((s for s in shapes[:-1] if _runs(backbone, s)), shapes[-1])


def _stage_entry(backbone: nn.Module):
    try:
        stages = residual_stages(backbone)
    except TypeError:
        return None
    if not stages:
        return None
    index = len(stages) // 2
    stage = stages[index][1]
    sites = block_sites(stage[len(stage) // 2]) if len(stage) else None
    if not sites or 'after_block' not in sites:
        return None
    return dict(cfg=BLOCK, stages=tuple(i == index for i in range(len(stages))), blocks=(len(stage) // 2, ),
                position='after_block')


def _candidates(backbone: nn.Module, shape) -> List[str]:
    order: Dict[str, int] = {}
    calls: Dict[str, int] = {}
    values: Dict[str, Any] = {}

    def watch(path):
        def hook(module, args, output):
            order.setdefault(path, len(order))
            calls[path] = calls.get(path, 0) + 1
            values[path] = output
        return hook

    handles = [m.register_forward_hook(watch(p)) for p, m in backbone.named_modules()
               if p and p.count('.') <= 3 and not isinstance(m, _NORMS)]
    try:
        with evaluation(backbone):
            backbone(probe_input(shape))
    finally:
        for h in handles:
            h.remove()
    by_depth: Dict[int, List[str]] = {}
    for path in sorted(order, key=order.get):
        value = values[path]
        is_map = isinstance(value, Tensor) and value.dim() in (4, 5) and value.shape[1] > 1 and \
            abs(value.shape[-2] * shape[-1] - value.shape[-1] * shape[-2]) <= max(shape[-2:])
        if calls[path] == 1 and (is_map or declared_layout(backbone, path) is not None):
            by_depth.setdefault(path.count('.'), []).append(path)
    # the shallowest level with a few candidates: stages and layers rather than their inner parts
    for depth in sorted(by_depth):
        if len(by_depth[depth]) >= 3:
            return by_depth[depth]
    return [p for depth in sorted(by_depth) for p in by_depth[depth]]


def middle_entry(backbone: nn.Module, shape=None) -> dict:
    """The plugin entry of one SNL block at a middle position of ``backbone`` (see the module docstring)."""
    if _native(backbone):
        stages = len(getattr(backbone, 'res_layers'))
        return dict(cfg=BLOCK, stages=tuple(i == stages // 2 for i in range(stages)), position='after_conv2')
    entry = _stage_entry(backbone)
    if entry is not None:
        return entry
    candidates = _candidates(backbone, shape or probe_shapes(backbone)[0])
    if not candidates:
        raise LookupError(f'{type(backbone).__name__}: no module runs once and gives a map or a declared layout')
    return dict(cfg=BLOCK, after=candidates[len(candidates) // 2])


def _tensors(value) -> List[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def check_backbone(scope: str, config: str, overrides: Dict[str, Any] = None, entry: Dict[str, Any] = None,
                   block: dict = BLOCK) -> Tuple[str, List[str]]:
    """Build the backbone of ``config`` (with ``overrides``) plain and with one ``block`` by config (at ``entry``'s
    place, a middle position by default); check the invariants.

    Returns:
        tuple: ``(entry description, block paths)`` (one block; one per residual block of the chosen stage in a
        backbone whose own ``plugins`` put them there).
    """
    init_default_scope(scope)
    # upstream inits draw from the global generator: seeded, the weights (and whether a gate such as PIDNet's
    # sigmoid saturates and hides the block) do not depend on which tests ran before in this process
    torch.manual_seed(0)
    overrides = dict(overrides or {})
    given_shape = overrides.pop('probe_shape', None)
    cfg = backbone_config(scope, config, overrides)
    plain = MODELS.build(cfg)
    native = _native(plain)
    shape = given_shape or (probe_shapes(plain)[0] if native else small_probe(plain))
    entry = dict(entry or middle_entry(plain, shape), cfg=block)
    model = MODELS.build(dict(cfg, plugins=[entry]) if native else dict(cfg, plugins=[entry], probe_shape=shape))
    # the user's backbone stays the user's: same class, only the blocks added
    assert type(model) is type(plain), (type(model), type(plain))
    blocks = find_blocks(model)
    assert len(blocks) == 1 or (native and blocks), list(blocks)
    # identity at init, on random upstream weights and norms
    randomise_norms_(model, seed=1)
    for block in blocks.values():
        block.init_weights()
    calls = {path: [] for path in blocks}
    handles = [block.register_forward_pre_hook(lambda m, args, path=path: calls[path].append(args[0].shape[1]))
               for path, block in blocks.items()]
    captures = outer_captures(model)
    with evaluation(model), evaluation(plain), one_clip(captures):
        plain_outs = _tensors(plain(probe_input(shape)))
        # after a forward (lazy buffers exist); keys the backbone's state dict leaves out itself (Swin V2 rebuilds
        # its relative position tables) are missing from any checkpoint of it
        own_missing = set(plain.load_state_dict(plain.state_dict(), strict=False).missing_keys)
        result = plain.load_state_dict(model.state_dict(), strict=False)
        outs = _tensors(model(probe_input(shape)))
        plain_outs = _tensors(plain(probe_input(shape)))
    assert set(result.missing_keys) <= own_missing, sorted(set(result.missing_keys) - own_missing)[:5]
    assert all(any(k.startswith(p + '.') for p in blocks) for k in result.unexpected_keys), result.unexpected_keys
    assert {k for k in model.state_dict() if not any(k.startswith(p + '.') for p in blocks)} == \
        set(plain.state_dict())
    # every block exactly once, on the channels it was built for
    assert all(seen == [blocks[path].in_channels] for path, seen in calls.items()), calls
    assert len(outs) == len(plain_outs) and all(torch.equal(a, b) for a, b in zip(outs, plain_outs))
    # blocks that are not the identity change the output
    for block in blocks.values():
        randomise_(block, std=0.05, seed=2)
    with evaluation(model), one_clip(captures):
        changed = _tensors(model(probe_input(shape)))
    assert any(not torch.equal(a, b) for a, b in zip(changed, plain_outs))
    # forward and backward in training mode, on two samples (batch norms need more than one value per channel)
    for capture in captures:
        capture.value = 2  # the clips of a TSN-style backbone, which its recogniser counts: two of the check's input
    for seen in calls.values():
        seen.clear()
    model.train()
    batch = probe_input((2 * shape[0], *shape[1:]))
    loss = sum(t.float().mean() for t in _tensors(model(batch)) if t.is_floating_point())
    loss.backward()
    for handle in handles:
        handle.remove()
    assert all(seen == [blocks[path].in_channels] for path, seen in calls.items()), calls
    for block in blocks.values():
        grads = [p.grad for p in block.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    where = entry.get('after') or f"stages={entry['stages']}, blocks={entry.get('blocks')}, {entry['position']}"
    return where, list(blocks)
