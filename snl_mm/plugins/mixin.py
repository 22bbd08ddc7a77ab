"""What every plugin backbone with residual stages adds to its upstream class."""
from typing import Dict, List

import torch.nn as nn

from .insert import PluginEntries, init_inserted, insert_plugins


class PluginsMixin:
    """Gives a backbone with residual stages a ``plugins=`` argument.

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

    def insert_plugins(self, plugins: PluginEntries) -> None:
        """Validate ``plugins`` and insert the blocks (see :func:`snl_mm.plugins.insert_plugins`).

        Args:
            plugins (list[dict] | None): the plugin entries.
        """
        self.plugins = plugins
        self.plugin_paths = insert_plugins(self, plugins)
        # the upstream __init__ froze its stages before the blocks existed
        if self.plugin_paths and hasattr(self, '_freeze_stages'):
            self._freeze_stages()

    @property
    def plugin_blocks(self) -> Dict[str, nn.Module]:
        """``{path: block}`` of the inserted blocks."""
        return {path: self.get_submodule(path) for path in self.plugin_paths}

    def init_weights(self, *args, **kwargs) -> None:
        """The upstream initialisation, then every inserted block back to the identity.

        Blocks whose weights a checkpoint loaded during the upstream initialisation keep them (see
        :func:`snl_mm.plugins.init_inserted`). Arguments go to the upstream ``init_weights``.
        """
        upstream = super().init_weights
        init_inserted(self, self.plugin_paths, lambda: upstream(*args, **kwargs))
