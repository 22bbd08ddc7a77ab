"""mmaction2 1.2.0's missing ``localizers/drn`` (snl_mm.patches.mmaction_drn, mmaction2#2714)."""
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snl_mm.patches import mmaction_drn

MMACTION_DIR = Path(importlib.util.find_spec('mmaction').submodule_search_locations[0])


def test_placeholder_only_when_drn_is_missing() -> None:
    real_drn = (MMACTION_DIR / 'models' / 'localizers' / 'drn' / '__init__.py').is_file()
    assert mmaction_drn.drn_missing() is (not real_drn)
    assert mmaction_drn.is_applied() is (not real_drn)
    assert mmaction_drn.apply() is (not real_drn)  # a second application changes nothing


def test_without_snl_mm_the_gap_is_real(subprocess_env) -> None:
    """The upstream gap this module exists for: without snl_mm, ``import mmaction.models`` fails."""
    if not mmaction_drn.drn_missing():
        pytest.skip('this mmaction2 ships localizers/drn')
    proc = subprocess.run([sys.executable, '-c', 'import mmaction.models'], env=subprocess_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "No module named 'mmaction.models.localizers.drn'" in proc.stderr


def _registered_names() -> set:
    """Class names decorated with ``@MODELS.register_module()`` in mmaction2's model sources.

    ``models/multimodal`` only loads when its optional dependency (transformers) is installed.
    """
    from mmaction.utils.dependency import WITH_MULTIMODAL

    names = set()
    for path in (MMACTION_DIR / 'models').rglob('*.py'):
        if 'multimodal' in path.parts and not WITH_MULTIMODAL:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.ClassDef):
                for dec in node.decorator_list:
                    if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                            and dec.func.attr == 'register_module' and isinstance(dec.func.value, ast.Name)
                            and dec.func.value.id == 'MODELS' and not dec.args and not dec.keywords):
                        names.add(node.name)
    return names


def test_every_other_mmaction_model_registers() -> None:
    import mmaction.models  # noqa: F401
    from mmaction.registry import MODELS

    expected = _registered_names()
    assert len(expected) > 50  # the scan found mmaction2's models
    missing = sorted(expected - set(MODELS.module_dict))
    assert not missing, missing


def test_building_drn_raises_a_clear_error() -> None:
    if not mmaction_drn.drn_missing():
        pytest.skip('this mmaction2 ships localizers/drn')
    from mmaction.registry import MODELS
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmaction'), pytest.raises(ImportError, match='mmaction2/issues/2714'):
        MODELS.build(dict(type='DRN'))


def test_i3d_from_mmaction_shipped_config(i3d_config) -> None:
    """mmaction2's own I3D ResNet-50 config builds an I3D recognizer that classifies a tiny clip."""
    from mmaction.registry import MODELS
    from mmaction.structures import ActionDataSample
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(i3d_config.model).eval()
    assert type(model).__name__ == 'Recognizer3D' and type(model.backbone).__name__ == 'ResNet3d'
    assert model.backbone.depth == 50 and model.cls_head.num_classes == 400
    clip = torch.randint(0, 256, (1, 3, 8, 32, 32), dtype=torch.uint8)  # (clips, C, T, H, W)
    data = dict(inputs=[clip], data_samples=[ActionDataSample().set_gt_label(0)])
    with torch.no_grad():
        (sample, ) = model.test_step(data)
        feats = model(model.data_preprocessor(data)['inputs'], mode='tensor')
    assert sample.pred_score.shape == (400, )
    torch.testing.assert_close(sample.pred_score.sum(), torch.tensor(1.0))
    assert torch.isfinite(feats).all()
