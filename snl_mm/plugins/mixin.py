"""What every backbone class with a ``plugins=`` argument of its own adds to its upstream class."""
from typing import Dict, List, Optional, Sequence

import torch.nn as nn

from .entries import PluginEntries
from .insert import freeze_like_upstream, init_inserted, insert, keep_blocks_trainable


class PluginsMixin:
    """Gives a backbone a ``plugins=`` argument.

    Put it before the upstream class (``class ResNet(PluginsMixin, mmpretrain.models.ResNet)``) and call
    :meth:`insert_plugins` at the end of ``__init__``. The upstream ``forward``, ``train`` (``frozen_stages``,
    ``norm_eval``), ``with_cp`` and state-dict keys stay as they are; the inserted blocks belong to the
    residual blocks they sit in, so a frozen stage freezes its inserted blocks too, and ``norm_eval`` puts
    their norms in eval mode, as mmdetection's ``ResNet(plugins=...)`` does.

    Attributes:
        plugins (list[dict] | None): the entries given.
        plugin_paths (list[str]): module paths of the inserted blocks, e.g. ``['layer3.4.snl_block']``.
    """

    plugins: PluginEntries
    plugin_paths: List[str]

    def insert_plugins(self, plugins: PluginEntries, probe_shape: Optional[Sequence[int]] = None) -> None:
        """Check ``plugins``, insert the blocks and verify them (:func:`snl_mm.plugins.insert`).

        Args:
            plugins (list[dict] | None): the plugin entries.
            probe_shape (Sequence[int], optional): input shape of the build-time check.
        """
        self.plugins = plugins
        self.plugin_paths = [] if plugins is None else insert(self, plugins, probe_shape)
        if self.plugin_paths:
            freeze_like_upstream(self)

    @property
    def plugin_blocks(self) -> Dict[str, nn.Module]:
        """``{path: block}`` of the inserted blocks."""
        return {path: self.get_submodule(path) for path in self.plugin_paths}

    def train(self, mode: bool = True):
        """The upstream ``train`` (``frozen_stages``, ``norm_eval``...), then the blocks' own parameters trainable
        unless their whole stage is frozen (:func:`snl_mm.plugins.insert.keep_blocks_trainable`)."""
        super().train(mode)
        keep_blocks_trainable(self, getattr(self, 'plugin_paths', ()))
        return self

    def init_weights(self, *args, **kwargs) -> None:
        """The upstream initialisation, then every inserted block back to the identity.

        Blocks whose weights a checkpoint loaded during the upstream initialisation keep them (see
        :func:`snl_mm.plugins.init_inserted`). Arguments go to the upstream ``init_weights``.
        """
        upstream = super().init_weights
        init_inserted(self, self.plugin_paths, lambda: upstream(*args, **kwargs))


def plugin_class(upstream: type, module: str, summary: str) -> type:
    """``upstream`` with a ``plugins=`` argument (and ``probe_shape=``), as a class of module ``module``.

    The class is a subclass of ``upstream`` and :class:`PluginsMixin` whose ``__init__`` takes every upstream
    argument unchanged; assign it to a module-level name of ``module`` (so it pickles) and register it.
    """

    def __init__(self, *args, plugins: PluginEntries = None, probe_shape: Optional[Sequence[int]] = None,
                 **kwargs) -> None:
        upstream.__init__(self, *args, **kwargs)
        self.insert_plugins(plugins, probe_shape)

    doc = (f'{summary}\n\n    Args:\n        *args, **kwargs: the arguments of ``{upstream.__module__}.'
           f'{upstream.__name__}``.\n        plugins (list[dict], optional): plugin entries '
           '(:mod:`snl_mm.plugins.entries`). Default: None (the plain backbone).\n        probe_shape (tuple, '
           'optional): input shape of the build-time check.\n')
    return type(upstream.__name__, (PluginsMixin, upstream),
                dict(__init__=__init__, __doc__=doc, __module__=module, __qualname__=upstream.__name__))
