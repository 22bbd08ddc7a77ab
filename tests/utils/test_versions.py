"""Version guards (snl_mm.utils.versions): the comparison on given version strings, and the installed set."""
import pytest

from snl_mm.utils import versions


@pytest.mark.parametrize('package,version,ok', [
    ('mmcv', '2.0.0', True), ('mmcv', '2.1.0', True), ('mmcv', '2.0.0rc4', True), ('mmcv', '2.2.0', False),
    ('mmcv', '1.7.2', False), ('mmengine', '0.10.7', True), ('mmengine', '0.9.1', False),
    ('mmengine', '1.0.0', False), ('torch', '2.14.1', True), ('torch', '2.1.0+cpu', True), ('torch', '2.0.1', False),
])
def test_is_supported(package: str, version: str, ok: bool) -> None:
    assert versions.is_supported(package, version) is ok


def test_error_names_every_supported_range() -> None:
    with pytest.raises(ImportError) as info:
        versions.check_version('mmcv', '2.2.0')
    message = str(info.value)
    assert 'mmcv-lite or mmcv 2.2.0' in message
    for part in ('torch>=2.1.0', 'mmengine>=0.10.0,<1.0.0', 'mmcv-lite or mmcv>=2.0.0,<2.2.0', 'build_mmcv.sh'):
        assert part in message


def test_bad_arguments() -> None:
    with pytest.raises(KeyError, match='mmdet'):
        versions.is_supported('mmdet', '3.0.0')
    with pytest.raises(ValueError, match='invalid version'):
        versions.is_supported('mmcv', 'two')


def test_installed_set_is_supported() -> None:
    versions.check_versions()
