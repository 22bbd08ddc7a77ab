"""mmsegmentation needs compiled mmcv.ops (snl_mm.utils.optional)."""
import importlib
import importlib.util
import subprocess
import sys

import pytest

from snl_mm.utils import mmseg_available, require_mmseg
from snl_mm.utils.optional import MMSEG_UNDECLARED_DEPS

MESSAGE = ('<feature> needs mmsegmentation, which needs a compiled mmcv (mmcv.ops); '
           'install it with tools/build_mmcv.sh')


def _compiled_ops() -> bool:
    try:
        importlib.import_module('mmcv.ops')
    except ImportError:
        return False
    return True


def test_guard_matches_installation() -> None:
    has_mmseg = importlib.util.find_spec('mmseg') is not None
    has_deps = all(importlib.util.find_spec(m) is not None for m in MMSEG_UNDECLARED_DEPS)
    assert mmseg_available() is (has_mmseg and _compiled_ops() and has_deps)
    if mmseg_available():
        import mmseg.models  # noqa: F401
        from mmseg.registry import MODELS
        assert 'EncoderDecoder' in MODELS.module_dict
        require_mmseg('segmentation head')  # no error
    else:
        with pytest.raises(ImportError) as info:
            require_mmseg('segmentation head')
        if has_mmseg and _compiled_ops():
            assert str(info.value).startswith('segmentation head needs mmsegmentation, whose models import')
        else:
            assert str(info.value) == MESSAGE.replace('<feature>', 'segmentation head')
        assert info.value.__cause__ is not None  # the underlying import error is kept


# A child process with one module made unimportable: `mmcv._ext` is exactly what mmcv-lite lacks.
_HIDDEN = '''
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Hide())
import snl_mm
from snl_mm.utils import mmseg_available, require_mmseg
from snl_mm.utils.optional import MMSEG_UNDECLARED_DEPS
assert mmseg_available() is False
try:
    require_mmseg('snl_mm.seg')
except ImportError as err:
    print('mmseg.models' in sys.modules)
    print(err)
'''


def _run_hidden(hidden: str, env) -> list:
    proc = subprocess.run([sys.executable, '-c', _HIDDEN.format(hidden=hidden)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-2:]


def test_without_compiled_ops(subprocess_env) -> None:
    """As with mmcv-lite: ``import snl_mm`` works, ``mmseg.models`` is never imported, and segmentation
    raises the one clear error."""
    imported, message = _run_hidden('mmcv._ext', subprocess_env)
    assert imported == 'False'
    assert message == MESSAGE.replace('<feature>', 'snl_mm.seg')


@pytest.mark.skipif(not _compiled_ops(), reason='needs compiled mmcv.ops')
def test_without_ftfy(subprocess_env) -> None:
    """Compiled ops but no ftfy (mmsegmentation#3704): the error names the missing module."""
    _, message = _run_hidden('ftfy', subprocess_env)
    assert message.startswith('snl_mm.seg needs mmsegmentation, whose models import ftfy')
