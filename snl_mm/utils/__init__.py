"""Helpers every layer may use: argument checks, version guards, optional packages. Pure Python."""
from .checks import check_int, check_positive_int, is_int
from .optional import EXTRAS, install_hint, is_installed, is_usable, mmseg_available, require, require_mmseg
from .signature import accepts_argument, argument_default
from .versions import check_versions, supported_ranges

__all__ = ['check_int', 'check_positive_int', 'is_int', 'EXTRAS', 'install_hint', 'is_installed', 'is_usable',
           'mmseg_available', 'require', 'require_mmseg', 'accepts_argument', 'argument_default', 'check_versions',
           'supported_ranges']
