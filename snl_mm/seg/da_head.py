"""DANet's decode head with the package's blocks: mmsegmentation's ``DAHead`` whose position and channel attention
are :class:`~snl_mm.blocks.PAMBlock` and :class:`~snl_mm.blocks.CAMBlock`.

This module imports mmsegmentation, which needs a compiled mmcv (``mmcv.ops``); ``snl_mm.seg`` imports it only when
mmsegmentation can load.
"""
from mmseg.models.decode_heads.da_head import DAHead as _DAHead

from snl_mm.blocks import CAMBlock, PAMBlock
from snl_mm.registry import MODELS


@MODELS.register_module()
class DAHead(_DAHead):
    """mmsegmentation's ``DAHead`` (``type='snl_mm.DAHead'``) with :class:`~snl_mm.blocks.PAMBlock` as ``pam`` and
    :class:`~snl_mm.blocks.CAMBlock` as ``cam``::

        x ─> pam_in_conv ─> pam ─> pam_out_conv ─┬─> pam_conv_seg ─> pam logits
          └> cam_in_conv ─> cam ─> cam_out_conv ─┼─> cam_conv_seg ─> cam logits
                                                 └─ sum ─> conv_seg ─> logits

    The structure, the outputs (``forward`` returns the three logits, ``predict`` uses the first, the loss sums the
    three as upstream), the arguments and the checkpoint keys are upstream's: a ``DAHead`` checkpoint loads strictly
    (``pam.query_project``, ``pam.key_project``, ``pam.value_project``, ``pam.gamma.scale``, ``cam.gamma.scale``
    are the blocks' own names) and computes the same logits; PAM runs through fused attention instead of two
    ``N x N`` maps.

    Args:
        pam_channels (int): the query/key channels of the position attention (``key_channels`` of
            :class:`~snl_mm.blocks.PAMBlock`).
        **kwargs: the arguments of ``BaseDecodeHead`` (``in_channels``, ``channels``, ``num_classes``,
            ``norm_cfg``, ...).

    Shapes:
        input: the backbone's multi-level features; the selected one ``(B, in_channels, H, W)``.
        output: three logits ``(B, num_classes, H, W)`` (PAM + CAM, PAM, CAM).
    """

    def __init__(self, pam_channels: int, **kwargs) -> None:
        super().__init__(pam_channels, **kwargs)
        self.pam = PAMBlock(self.channels, key_channels=pam_channels)
        self.cam = CAMBlock(self.channels)

    def init_weights(self) -> None:
        """mmsegmentation's initialisation: the head's (``conv_seg``, the ``ConvModule``'s), PAM's projections with
        PyTorch's default (``PAM`` does not initialise them), both gammas zero."""
        super().init_weights()
        for conv in (self.pam.query_project, self.pam.key_project, self.pam.value_project):
            conv.reset_parameters()
