"""EMA: the expectation-maximisation attention unit of EMANet (Li et al. 2019), laid out as mmsegmentation's
``EMAHead`` (its ``ema_mid_conv``, ``ema_module``, ``ema_out_conv``)."""
from typing import Dict, List, Optional, Sequence

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor

from snl_mm.graph import EMAffinity, EMOperator, graph_filter
from snl_mm.registry import ROOT_MODELS
from .base import FilterWeight, NonlocalBase
from .tokens import ConfigType, flat_norm_cfg, flatten_map, from_tokens, is_plain_pointwise, to_tokens

#: how the unit's output meets its input: ``X + out`` (identity at init) or EMANet's ``relu(X + out)``
FUSIONS = ('residual', 'residual_relu')
#: what receives gradients through the reconstruction (see :class:`EMABlock`)
GRADS = ('none', 'signal', 'full')


@ROOT_MODELS.register_module()
class EMABlock(NonlocalBase):
    """Expectation-maximisation attention unit: ``Y = X + act(norm(W relu(A Z)))``, ``A`` of rank ``K``.

    ``Z = X W_m`` is a frozen 1x1 projection of the input (``ema_mid_conv``, with bias; EMANet maps the
    non-negative input to both signs with it and never trains it). ``K`` bases are fitted to ``Z`` by ``T`` EM
    iterations starting from their moving average (:class:`~snl_mm.graph.EMAffinity`, the buffer
    ``ema_module.bases``), and ``Z`` is reconstructed from them: ``A Z = Z_resp mu^T``, with the affinity
    ``A = Z_resp D_mu^-1 Z~^T`` of rank ``K`` (:mod:`snl_mm.graph.em`). In the unified form (paper Eq. 4, second
    Chebyshev term) this is ``F(A, Z) = relu(A Z) W`` with ``W`` the 1x1 convolution of ``ema_out_conv`` and its
    norm the output norm (zero-initialised: the block starts as the identity). Memory ``O(N K + N C)``; ``A`` is
    never formed, and neither is ``Z`` where ``A Z`` is the reconstruction (see :meth:`forward`). The EM iterations
    run in float32 under autocast.

    With the same state dict and ``fusion='residual_relu'`` it computes what mmsegmentation's ``EMAHead`` computes
    between its ``ema_in_conv`` and ``bottleneck`` (``relu(identity + ema_out_conv(relu(ema_module(
    ema_mid_conv(identity)))))``), in training and evaluation, buffer update included, for inputs of any rank.

    Args:
        in_channels (int): channels ``C`` of the input ``(B, C, *S)``, ``S`` of rank 1, 2 or 3 (EMAHead's
            ``ema_channels``).
        num_bases (int): ``K``. Default: 64.
        num_stages (int): EM iterations ``T >= 1``. Default: 3.
        momentum (float): weight of a batch's bases in their moving average, in ``[0, 1]``. Default: 0.1.
        fusion (str): ``'residual'``: ``Y = X + act(norm(...))``, the identity at init (default);
            ``'residual_relu'``: ``Y = relu(X + act(norm(...)))``, EMANet's head (not the identity at init: ReLU
            clips the input's negative part).
        grad (str): what the reconstruction passes gradients to. ``'none'`` (EMANet, default): nothing: the EM
            iterations and the reconstruction run without gradient, ``ema_mid_conv`` is frozen
            (``requires_grad=False``), and the input's gradient comes through the residual path alone; the
            output layers (``ema_out_conv``) are trained. ``'signal'``: ``A`` stays a constant (iterations without
            gradient) but ``A Z`` passes gradients to ``Z``, so ``ema_mid_conv`` and the input receive them
            (``ema_mid_conv`` is trainable). ``'full'``: also through the EM iterations (exact gradients of the
            whole function; ``ema_mid_conv`` trainable).
        conv_cfg (dict, optional): 1x1 convolution config.
        norm_cfg (dict, optional): the norm of ``ema_out_conv`` (its weight and bias zero at init). Default:
            ``dict(type='BN')``. None: no norm, the convolution gets a bias and is zeroed instead.
        act_cfg (dict, optional): activation after the norm, before the residual. Default: None.
        init_cfg (dict, optional): mmengine init config.

    Shapes: input and output ``(B, C, *S)``; ``affinity(x)``: ``(B, N, N)`` (formed for analysis; the moving
    average is not updated by it).

    Checkpoint keys (mmsegmentation's ``EMAHead``): ``ema_mid_conv.conv`` (weight and bias), ``ema_module.bases``
    ``(1, C, K)``, ``ema_out_conv.conv`` (weight), ``ema_out_conv.bn`` (``.gn``... with other norms).
    """

    _abbr_ = 'ema_block'
    node_feature = 'X W_Z'

    def __init__(self,
                 in_channels: int,
                 num_bases: int = 64,
                 num_stages: int = 3,
                 momentum: float = 0.1,
                 fusion: str = 'residual',
                 grad: str = 'none',
                 conv_cfg: ConfigType = None,
                 norm_cfg: ConfigType = dict(type='BN'),
                 act_cfg: ConfigType = None,
                 init_cfg: ConfigType = None):
        super().__init__(in_channels, 1, None, conv_cfg, norm_cfg, act_cfg, init_cfg)
        if fusion not in FUSIONS:
            raise ValueError(f'EMABlock: fusion must be one of {FUSIONS}, got {fusion!r}')
        if grad not in GRADS:
            raise ValueError(f'EMABlock: grad must be one of {GRADS}, got {grad!r}')
        try:
            self.ema_module = EMAffinity(in_channels, num_bases, num_stages, momentum,
                                         grad='full' if grad == 'full' else 'none')
        except ValueError as err:
            raise ValueError(f'EMABlock: {err}') from err
        self.fusion = fusion
        self.grad = grad
        self.ema_mid_conv = ConvModule(in_channels, in_channels, 1, conv_cfg=conv_cfg, norm_cfg=None, act_cfg=None)
        if grad == 'none':
            for param in self.ema_mid_conv.parameters():
                param.requires_grad = False
        self.ema_out_conv = ConvModule(in_channels, in_channels, 1, conv_cfg=conv_cfg,
                                       norm_cfg=flat_norm_cfg(norm_cfg), act_cfg=None)
        self.act = self.build_act()
        self.init_weights()

    @property
    def graph(self) -> EMAffinity:
        """The affinity (kept under ``ema_module``, mmsegmentation's name)."""
        return self.ema_module

    @property
    def num_bases(self) -> int:
        return self.ema_module.num_bases

    @property
    def num_stages(self) -> int:
        return self.ema_module.num_stages

    @property
    def momentum(self) -> float:
        return self.ema_module.momentum

    def output_layers(self, unit: Optional[nn.Module] = None) -> Sequence[nn.Module]:
        return [self.ema_out_conv.norm if self.ema_out_conv.with_norm else self.ema_out_conv.conv]

    def _features(self, x: Tensor) -> Tensor:
        """``Z = X W_m`` in token layout ``(B, N, C)`` (a constant of autograd with ``grad='none'``)."""
        z = to_tokens(self.ema_mid_conv(flatten_map(x)))
        return z.detach() if self.grad == 'none' else z

    def graph_operator(self, x: Tensor) -> EMOperator:
        """The EM affinity of input ``x`` ``(B, C, *S)``; the moving average does not move."""
        z = self._features(x)
        return self.ema_module(z, z, x.shape[2:], update=False)

    def node_features(self, unit: nn.Module, x: Tensor) -> Tensor:
        return self._features(x)

    def filter_weights(self, unit: nn.Module) -> List[FilterWeight]:
        """``W``: ReLU, then ``ema_out_conv`` (1x1 convolution and the output norm)."""
        # in place: A Z is used by nothing else (as mmsegmentation's head)
        return [lambda t: self.ema_out_conv(F.relu(from_tokens(t), inplace=True))]

    def output_norm(self, unit: nn.Module):
        # the norm is ema_out_conv's own (mmsegmentation's layout): only the activation follows
        return None, self.act

    @property
    def folds_features(self) -> bool:
        """Whether the forward pass folds ``ema_mid_conv`` into the EM iterations instead of forming ``Z`` (a plain
        1x1 convolution, and ``A Z`` the reconstruction: ``grad`` other than ``'signal'``)."""
        return self.grad != 'signal' and is_plain_pointwise(self.ema_mid_conv.conv)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S)``: the unified form of the base with ``Z`` the affinity's input and the node
        features both (in training the bases' moving average moves).

        ``A Z`` is the reconstruction ``Z_resp mu^T``, so ``Z = X W_m + b`` is needed only inside the EM iterations,
        where ``W_m`` folds into the bases (:func:`~snl_mm.graph.em.em_iterations`): ``Z`` is never formed, one
        ``O(N C^2)`` product less than upstream, the same function (to rounding). With ``grad='signal'`` (or a
        custom ``conv_cfg``) ``Z`` is formed and filtered as in the base.
        """
        self.check_input(x)
        if self.folds_features:
            tokens = to_tokens(flatten_map(x))
            conv = self.ema_mid_conv.conv
            op = self.ema_module(tokens, tokens, x.shape[2:], weight=conv.weight.flatten(1), bias=conv.bias)
            filtered = self.filter_weights(self)[0](op.reconstruction())
        else:
            z = self._features(x)
            op = self.ema_module(z, z, x.shape[2:])
            filtered = graph_filter(op, z, self.filter_spec, self.filter_weights(self))
        out = self.residual(x, filtered, None, self.act)
        return F.relu(out) if self.fusion == 'residual_relu' else out

    def spectral_form(self) -> Dict[str, str]:
        """Table 1's row; the filter with the ReLU between ``A Z`` and ``W``."""
        return dict(super().spectral_form(), filter='relu(A Z) W')

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, num_bases={self.num_bases}, num_stages={self.num_stages}, '
                f'momentum={self.momentum}, fusion={self.fusion!r}, grad={self.grad!r}')
