"""SNL: the Chebyshev spectral nonlocal block (paper Eq. 5)."""
from typing import Optional

from snl_mm.graph.cost import Path
from snl_mm.registry import ROOT_MODELS
from snl_mm.utils import check_int
from .graph_block import GraphNonlocalBlock
from .tokens import ConfigType

#: activations whose gradient at 0 is 0: behind a zero-initialised norm they stop all learning
DEAD_AT_ZERO = ('ReLU', 'ReLU6')


@ROOT_MODELS.register_module()
class SNLBlock(GraphNonlocalBlock):
    """Chebyshev spectral nonlocal block: ``Y = X + act(norm(Z W_1 + A Z W_2))``.

    ``M = relu(theta) relu(phi)^T``, ``M^ = (M + M^T) / 2``, ``A = D^-1/2 M^ D^-1/2`` with ``D = diag(M^ 1)``
    (a position of zero degree gets a zero row). ``M`` has rank ``Cs``, so for large ``N`` the block computes
    ``A Z`` as ``D^-1/2 (P (Q^T Z') + Q (P^T Z')) / 2`` with ``Z' = D^-1/2 Z`` in ``O(N Cs^2)``, and forms the
    dense ``A`` only where that is cheaper (:mod:`snl_mm.graph.cost`). With ``order=K > 2`` the filter is the
    full Chebyshev series ``sum_{k<K} T_k(A) Z W_{k+1}`` (gSNL).

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, any rank 1-3.
        reduction (int): ``Cs = C // reduction``. Default: 2.
        inner_channels (int, optional): ``Cs`` directly.
        order (int): Chebyshev terms ``K >= 2`` (``2``: Eq. 5). Default: 2.
        num_units (int): units sharing one affinity (the official SNL stage). Default: 1.
        path (str): ``'auto'`` (cost model), ``'dense'`` or ``'factored'``. Default: ``'auto'``.
        bias (bool): bias in the 1x1 convolutions (the official code has none). Default: False.
        conv_cfg (dict, optional): 1x1 convolution config.
        norm_cfg (dict, optional): output norm. Default: ``dict(type='BN')``.
        act_cfg (dict, optional): activation after the norm. Default: None, as Eq. 5. The official code's
            optional ReLU is ``dict(type='ReLU')``, but behind the zero-initialised norm (identity at init)
            its input is exactly 0, where ReLU's gradient is 0: such a block never leaves the identity, so
            it is refused unless ``init_cfg`` initialises the block otherwise.
        init_cfg (dict, optional): mmengine init config.

    Checkpoint keys: ``theta``, ``phi``, ``g``, ``w1`` (the ``Z`` term), ``w2`` (the ``A Z`` term), ``w3``...
    (higher terms), ``norm``; units after the first under ``units.{i}.``.
    """

    _abbr_ = 'snl_block'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 inner_channels: Optional[int] = None,
                 order: int = 2,
                 num_units: int = 1,
                 path: Path = 'auto',
                 bias: bool = False,
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        if act_cfg is not None and act_cfg.get('type') in DEAD_AT_ZERO and not init_cfg:
            raise ValueError(
                f"SNLBlock: act_cfg={act_cfg!r} after the zero-initialised norm has zero gradient at "
                "init, so the block would never train; use act_cfg=None (Eq. 5) or an activation with a "
                "non-zero slope at 0 (e.g. dict(type='LeakyReLU')), or give an init_cfg")
        check_int(order, 'order', 'SNLBlock', minimum=2, note=' (2 is Eq. 5: Z W1 + A Z W2)')
        super().__init__(
            in_channels, reduction, inner_channels,
            affinity=dict(kernel='relu_dot', symmetrize=True, normalize='symmetric', path=path),
            graph_filter=dict(order=order),
            num_units=num_units, bias=bias, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg,
            init_cfg=init_cfg)
