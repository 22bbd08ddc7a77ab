"""The precision policy of the graph operators: which products run in half precision, which sums stay float32.

Under ``torch.autocast`` the blocks' 1x1 convolutions run in the autocast dtype (autocast decides). Inside the
graph operators the package decides, by one rule for every block: **products run in the compute dtype wherever
their sums cannot leave its range; reductions that can overflow or lose precision run in float32.** The compute
dtype is the autocast dtype when autocast is on for the tensor's device, else the tensor's own dtype (a module
converted to ``bfloat16`` or ``float16`` computes in it; ``float64`` stays ``float64``).

=====================================  ===================  ===================================================
computation                            dtype                why
=====================================  ===================  ===================================================
softmax attention ``softmax(q k^T) v``  compute dtype        ``scaled_dot_product_attention`` accumulates the
(NL, NS)                                                    logits and the softmax in float32 inside the
                                                            kernel, and its output is a convex combination of
                                                            ``v``: it cannot leave ``v``'s range
low-rank products ``P (Q^T Z)``         compute dtype        bfloat16 has float32's range. In float16 the
(SNL, A2, NL ``dot_product``, graph                         factors are rebalanced per sample and rank column
blocks)                                                     by powers of two (:func:`balance_columns`) so that
                                                            every entry of ``Q^T Z`` is at most ``max |Z|``;
                                                            the products then reach only ``A Z``'s own values
dense ``A Z`` (exponential kernels      compute dtype if     a normalised affinity has entries in ``[0, 1]``;
without softmax streaming, small-N      ``A`` is normalised  an unnormalised one (``normalize='none'/'size'``)
SNL)                                    or bfloat16, else    can exceed float16's 65504
                                        float32
logits that feed an exponential         float32              a bfloat16 logit of 64 is off by 0.25: the weight
(dense ``exp_dot``, criss-cross)                            by 28%
degrees ``M 1``, key sums ``Q^T 1``,    float32              sums over ``N`` overflow float16 and lose bits in
``D^-1``, ``D^-1/2``, softmax                               bfloat16; a zero degree gives a zero row
normalisers (A2), log-domain
normalisations
CGNL's kernel (Taylor features, the     float32              sums over all ``c N`` nodes of a group reach
sums over ``c N`` nodes)                                    ``1e5`` at ordinary activations; its output is
                                                            brought into the range of the dtype that runs
                                                            next by a power of two per sample where the norm
                                                            after it is invariant to that
                                                            (:mod:`snl_mm.blocks.cgnl`)
criss-cross attention (CC)              float32              its line logits feed one joint softmax; its line
                                                            products write into the buffers of its written-out
                                                            backward
=====================================  ===================  ===================================================

Every operator returns ``A z`` in the compute dtype (the dtype of the layers after it), also where its products
ran in float32 to hold their sums, except CGNL's, whose block brings its float32 result into range itself.

The rule that no finite input gives NaN or Inf holds in every dtype, forward and backward: the products above
never produce a value larger than the operator's own output (or the float32 reductions absorb it), a position of
zero degree gets a zero row (and a zero gradient), and the power-of-two exponents of the range controls are
constants of autograd (their derivative is zero; ``log2``'s at a zero column norm would be ``0 / 0``).

What no policy can fix is an input the autocast dtype cannot represent: float16 autocast casts the projections'
inputs and weights to float16, so a projection output beyond 65504 is Inf before a block's graph sees it.
"""
from typing import Tuple

import torch
from torch import Tensor

#: the half-precision dtypes the policy rebalances or keeps out of reductions
HALF_DTYPES = (torch.float16, torch.bfloat16)


def float32(t: Tensor) -> Tensor:
    """``t`` in at least float32: half precision is widened, float32 and float64 are returned unchanged."""
    return t.float() if t.dtype in HALF_DTYPES else t


def no_autocast(device_type: str):
    """A region where autocast is off: its operations run in the dtypes of their inputs."""
    return torch.autocast(device_type=device_type, enabled=False)


def compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype products on ``t`` run in: the autocast dtype when autocast is on for ``t``'s device and ``t`` is
    a floating tensor of at most 32 bits, else ``t.dtype``."""
    device = t.device.type
    if t.dtype in (torch.float32, *HALF_DTYPES) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return t.dtype


def power_of_two_exponent(magnitude: Tensor) -> Tensor:
    """``ceil(log2(magnitude))`` where that is finite, else 0: the exponent of the power of two at or above a
    non-negative magnitude (0 for zero, NaN and Inf, so that a broken sample keeps its own values).

    A constant of autograd: the exponent is piecewise constant (its derivative is 0 wherever it has one), and
    ``log2``'s backward at a zero magnitude is ``0 / 0``, a NaN that the ``where`` and ``ceil`` after it would
    pass on (a column of factors that ReLU zeroes, as on a constant or all-negative map)."""
    exponent = torch.ceil(torch.log2(magnitude.detach()))
    return torch.where(torch.isfinite(exponent), exponent, torch.zeros_like(exponent))


def power_of_two(exponent: Tensor) -> Tensor:
    """``2^exponent`` for integer-valued exponents, exactly (``pow``, which every exporter maps; ONNX has no
    ``exp2``)."""
    return torch.pow(2.0, exponent)


def balance_columns(inner: Tensor, outer: Tensor) -> Tuple[Tensor, Tensor]:
    """Rescale the rank columns of a low-rank pair so that products with ``inner`` cannot overflow.

    For ``A = outer inner^T`` (``(B, N_q, c)`` and ``(B, N_k, c)``) column ``j`` of ``inner`` is divided and
    column ``j`` of ``outer`` multiplied by ``2^e_j``, ``e_j`` the exponent of ``||inner[b, :, j]||_1`` per sample:
    ``A`` is unchanged (powers of two scale exactly) and every entry of ``inner^T Z`` is at most ``max |Z|``.

    Returns:
        tuple[Tensor, Tensor]: the rebalanced ``(inner, outer)``.
    """
    exponent = power_of_two_exponent(inner.abs().sum(dim=1, keepdim=True))  # (B, 1, c)
    return inner * power_of_two(-exponent), outer * power_of_two(exponent)


@torch.fx.wrap
def outside_autocast(module: torch.nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with autocast off for ``x``'s device, in the module's own dtype (float32 in mixed precision);
    unchanged where autocast is off. For the embeddings of logits sharpened by a temperature (DNL's
    ``1 / tau = 20``), whose half-precision rounding the temperature would multiply."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return module(x)
    with no_autocast(device):
        return module(x.to(next(module.parameters()).dtype))
