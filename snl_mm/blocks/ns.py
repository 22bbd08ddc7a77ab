"""NS: the nonlocal stage of Tao et al. 2018 (paper Appendix B.2)."""
from typing import Optional

from snl_mm.registry import ROOT_MODELS
from .graph_block import GraphNonlocalBlock
from .tokens import ConfigType


@ROOT_MODELS.register_module()
class NSBlock(GraphNonlocalBlock):
    """Nonlocal stage: ``Y = X + act(norm((A Z - Z) W))``, i.e. ``sum_j a_ij (z_j - z_i) W``.

    ``A = softmax_j(theta_i . phi_j)`` (random-walk normalised, ``D^-1 M``), applied by fused attention;
    the one weight ``W`` is shared by the ``T_1`` and ``T_0`` terms (coefficients ``(1, -1)``), so the
    convolution runs once. ``num_units > 1`` stacks diffusion units that all use the affinity computed from
    the stage input, as the nonlocal stage does.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, any rank 1-3.
        reduction (int): ``Cs = C // reduction``. Default: 2.
        inner_channels (int, optional): ``Cs`` directly.
        num_units (int): diffusion units sharing one affinity. Default: 1.
        use_scale (bool): scale the logits by ``1 / sqrt(Cs)`` (the NS paper has no scale). Default: False.
        bias (bool): bias in the 1x1 convolutions. Default: True.
        conv_cfg, norm_cfg (default BN), act_cfg (default None), init_cfg: see
            :class:`~snl_mm.blocks.base.NonlocalBase`.

    Checkpoint keys: ``theta``, ``phi``, ``g``, ``w`` (the shared weight), ``norm``; units after the first
    under ``units.{i}.``.
    """

    _abbr_ = 'ns_block'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 num_units: int = 1,
                 use_scale: bool = False,
                 bias: bool = True,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        super().__init__(
            in_channels, reduction, inner_channels,
            affinity=dict(kernel='exp_dot', normalize='random_walk',
                          scale='inv_sqrt' if use_scale else 1.0),
            graph_filter=dict(order=2, terms=(0, 1), shared_coefficients=(-1.0, 1.0)),
            num_units=num_units, bias=bias, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg,
            init_cfg=init_cfg)
