"""Where everything in snl_mm registers.

* The six blocks (and the configurable :class:`~snl_mm.blocks.GraphNonlocalBlock`) register in
  mmengine's **root** ``MODELS``: every OpenMMLab scope (mmpretrain, mmaction, mmdet, mmseg) falls back to
  the root, so ``dict(type='SNLBlock')`` works in any of their configs and in
  ``mmcv.cnn.build_plugin_layer``.
* Backbones, heads and datasets register in the package's own scope ``snl_mm``, a child of the root
  registries, and are named with the scope prefix in configs: ``type='snl_mm.ResNet'``.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import RUNNERS
from mmengine.registry import Registry, init_default_scope

#: mmengine's root model registry: the blocks live here.
ROOT_MODELS = MMENGINE_MODELS

#: models of the ``snl_mm`` scope (plugin backbones, decode heads).
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='snl_mm',
                  locations=['snl_mm.backbones', 'snl_mm.seg'])

#: datasets of the ``snl_mm`` scope (the generated demo dataset).
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='snl_mm',
                    locations=['snl_mm.datasets'])


def build_runner(cfg):
    """The runner of a config (what ``tools/train.py`` and ``tools/test.py`` run): ``Runner.from_cfg``, or the
    registered runner named by ``runner_type`` in the config's scope."""
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return RUNNERS.build(cfg)
