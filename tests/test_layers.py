"""The package's layers import in one direction only (README, "How the package is built"): each module imports
only from its own layer and the ones before it, the core imports no toolbox, and nothing in the package imports
the opt-in fixes of :mod:`snl_mm.compat` (the tools and configs do); ``compat`` itself builds on the bottom layers
and on the table of :mod:`snl_mm.patches` only."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'snl_mm'
#: the layers in order; a module of a layer may import the layers before it and its own
LAYERS = ['utils', 'graph', 'registry', 'config_scope', 'patches', 'blocks', 'plugins', 'backbones', 'seg',
          'datasets', 'analysis']
#: the opt-in fixes, beside the chain: what they may import
COMPAT = {'utils', 'registry', 'config_scope', 'patches', 'compat'}
#: what each layer may import from outside the package, beyond the standard library and numpy
THIRD_PARTY = {
    'utils': {'packaging'},
    'graph': {'torch'},
    'registry': {'torch', 'mmengine'},
    'blocks': {'torch', 'mmengine', 'mmcv'},
    'plugins': {'torch', 'mmengine', 'mmcv'},
}
TOOLBOXES = {'mmpretrain', 'mmaction', 'mmseg', 'mmdet'}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path):
    """``(top-level module, snl_mm layer or None)`` of every import in a file (module level or not)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE.parent).with_suffix('').parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(package[:-node.level])
                names = ['.'.join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split('.')
            yield parts[0], (parts[1] if parts[0] == 'snl_mm' and len(parts) > 1 else None)


MODULES = sorted(p for p in PACKAGE.rglob('*.py') if _layer(p) in LAYERS + ['compat'])


def test_every_module_has_a_layer():
    assert {_layer(p) for p in PACKAGE.rglob('*.py')} - set(LAYERS) == {'compat', '__init__', 'version'}


@pytest.mark.parametrize('path', MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_go_one_way(path):
    layer = _layer(path)
    allowed = COMPAT if layer == 'compat' else set(LAYERS[:LAYERS.index(layer) + 1])
    for top, inner in _imports(path):
        if top == 'snl_mm' and inner is not None:
            assert inner in allowed or inner in ('version', ), f'{path.name} ({layer}) imports snl_mm.{inner}'
        if layer in THIRD_PARTY and top not in ('snl_mm', 'numpy') and top in (
                {'torch', 'mmengine', 'mmcv', 'packaging'} | TOOLBOXES):
            assert top in THIRD_PARTY[layer], f'{path.relative_to(PACKAGE)} ({layer}) imports {top}'


def test_the_core_needs_no_toolbox():
    core = [p for p in MODULES if _layer(p) in ('utils', 'graph', 'registry', 'blocks', 'plugins')]
    offenders = [(str(p.relative_to(PACKAGE)), top) for p in core for top, _ in _imports(p) if top in TOOLBOXES]
    assert not offenders
