"""``snl_mm::`` as a config scope, as ``mmpretrain::`` and ``mmdet::`` are.

mmengine reads ``_base_ = 'snl_mm::demo/preresnet20-snl_relation.py'`` in a config, a base given to
``Config.fromfile`` and ``mmengine.hub.get_config('snl_mm::...')`` in three steps:

1. the name before ``::`` must be a key of ``mmengine.config.utils.MODULE2PACKAGE`` (import name ->
   distribution name); for any other name it stops with ``mmengine does not support to load snl_mm config``;
2. the distribution's install location gives the package directory (``mmengine.utils.get_installed_path``);
3. the config is looked up among the metafiles ``<package>/.mim/model-index.yml`` lists, else taken from
   ``<package>/.mim/configs/<path>``.

The package ships that ``.mim`` folder (configs, tools, ``model-index.yml``: ``setup.cfg``), so step 1 is all
that is missing: :func:`register_config_scope` adds the entry ``'snl_mm': 'snl-mm'``, and importing
:mod:`snl_mm` calls it. It is a registration, as the blocks' in mmengine's ``MODELS``: no function of mmengine
changes. Configs that inherit from ``snl_mm::`` therefore need ``snl_mm`` imported before they are read: the
package's tools, ``mim train snl_mm`` (which runs them) and any script that imports ``snl_mm`` first.
"""
import os.path as osp

from mmengine.config.utils import MODULE2PACKAGE

#: the config scope (the import name) and the distribution that provides it
SCOPE = 'snl_mm'
DISTRIBUTION = 'snl-mm'


def register_config_scope() -> None:
    """Make ``snl_mm::`` a config scope mmengine resolves. Idempotent."""
    MODULE2PACKAGE.setdefault(SCOPE, DISTRIBUTION)


def mim_dir() -> str:
    """The ``.mim`` folder of this installation of the package (``configs/``, ``tools/``, ``model-index.yml``).

    In a wheel it holds copies; in a checkout (editable install) links to the checkout's folders.
    """
    return osp.join(osp.dirname(osp.abspath(__file__)), '.mim')


register_config_scope()
