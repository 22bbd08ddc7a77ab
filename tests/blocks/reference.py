"""Float64 references of the NL, NS, SNL and graph blocks, written from the math of the paper (Section 2,
Appendix B) and ``spec/blocks.md``, independently of ``snl_mm.graph``.

Every reference reads the weights of a built block (1x1 kernels as ``(out, in)`` matrices), forms the dense
affinity explicitly and applies the filter as matrix products on ``(B, N, c)`` tokens. The output norm is
BatchNorm written out (running statistics in eval mode, biased batch statistics in train mode).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor


from tests.helpers import randomise_, randomise_norms_, rel_err  # noqa: F401 (re-exported)


def conv1x1(x: Tensor, conv: nn.Module) -> Tensor:
    """A 1x1 convolution of any rank as a matrix product: ``(B, in, N) -> (B, out, N)``."""
    w = conv.weight.reshape(conv.weight.shape[0], conv.weight.shape[1])
    y = w @ x
    if conv.bias is not None:
        y = y + conv.bias[None, :, None]
    return y


def batch_norm(y: Tensor, bn: nn.Module, training: bool) -> Tensor:
    """BatchNorm over batch and positions of ``(B, C, N)``."""
    if training:
        mean = y.mean(dim=(0, 2))
        var = y.var(dim=(0, 2), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    y_hat = (y - mean[None, :, None]) / torch.sqrt(var[None, :, None] + bn.eps)
    return y_hat * bn.weight[None, :, None] + bn.bias[None, :, None]


def group_norm(y: Tensor, gn: nn.GroupNorm) -> Tensor:
    """GroupNorm of ``(B, C, N)``: statistics per sample over each group's channels and all positions."""
    b, c, n = y.shape
    g = y.reshape(b, gn.num_groups, -1)
    g = (g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + gn.eps)
    return g.reshape(b, c, n) * gn.weight[None, :, None] + gn.bias[None, :, None]


def output_norm(y: Tensor, norm: Optional[nn.Module], training: bool) -> Tensor:
    if norm is None:
        return y
    if isinstance(norm, nn.GroupNorm):
        return group_norm(y, norm)
    return batch_norm(y, norm, training)


def tokens(t: Tensor) -> Tensor:
    """``(B, c, N) -> (B, N, c)``."""
    return t.transpose(1, 2)


def max_pool_spatial(x: Tensor) -> Tensor:
    """Max over non-overlapping 2-windows of the last axis (1D) or of ``(H, W)`` (2D, 3D), floor sizes."""
    rank = x.dim() - 2
    if rank == 1:
        b, c, length = x.shape
        return x[..., :length // 2 * 2].reshape(b, c, length // 2, 2).amax(-1)
    *lead, h, w = x.shape
    x = x[..., :h // 2 * 2, :w // 2 * 2]
    return x.reshape(*lead, h // 2, 2, w // 2, 2).amax(dim=(-3, -1))


# -- affinities ------------------------------------------------------------------------------------
def softmax_rows(logits: Tensor) -> Tensor:
    """``exp(l_ij) / sum_j exp(l_ij)`` written out (shifted by the row max, which cancels)."""
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def snl_affinity(theta: Tensor, phi: Tensor) -> Tensor:
    """Eq. 5: ``M = relu(theta) relu(phi)^T``, ``M^ = (M + M^T) / 2``, ``A = D^-1/2 M^ D^-1/2``.

    ``theta``, ``phi``: ``(B, Cs, N)``. A zero degree gives a zero row and column.
    """
    p, q = tokens(torch.relu(theta)), tokens(torch.relu(phi))
    m = p @ q.transpose(1, 2)
    m_hat = (m + m.transpose(1, 2)) / 2
    d = m_hat.sum(-1)
    d_inv_sqrt = torch.where(d > 0, 1 / torch.sqrt(torch.where(d > 0, d, torch.ones_like(d))),
                             torch.zeros_like(d))
    return d_inv_sqrt[:, :, None] * m_hat * d_inv_sqrt[:, None, :]


def chebyshev_matrices(a: Tensor, order: int) -> List[Tensor]:
    """``T_0 = I``, ``T_1 = A``, ``T_k = 2 A T_{k-1} - T_{k-2}`` as dense ``(B, N, N)`` matrices."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
    ts = [eye, a]
    for _ in range(2, order):
        ts.append(2 * a @ ts[-1] - ts[-2])
    return ts[:order]


# -- blocks ----------------------------------------------------------------------------------------
def _units(block: nn.Module) -> Sequence[nn.Module]:
    return [block, *getattr(block, 'units', [])]


def _finish(out: Tensor, unit: nn.Module, training: bool) -> Tensor:
    out = output_norm(out, unit.norm, training)
    if getattr(unit, 'act', None) is not None:
        assert isinstance(unit.act, nn.ReLU), 'the references implement ReLU only'
        out = torch.relu(out)
    return out


def snl_reference(block: nn.Module, x: Tensor, order: int = 2, training: bool = False) -> Tensor:
    """SNL / gSNL: ``Y = X + act(norm(sum_k T_k(A) Z W_{k+1}))`` per unit, ``A`` from the block input."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    a = snl_affinity(conv1x1(xf, block.theta), conv1x1(xf, block.phi))
    ts = chebyshev_matrices(a, order)
    out = xf
    for unit in _units(block):
        z = tokens(conv1x1(out, unit.g))  # (B, N, Cs)
        y = sum(conv1x1(tokens(t @ z), getattr(unit, f'w{k + 1}')) for k, t in enumerate(ts))
        out = out + _finish(y, unit, training)
    return out.reshape(x.shape)


def ns_reference(block: nn.Module, x: Tensor, training: bool = False, scale: float = 1.0) -> Tensor:
    """NS (Appendix B.2, Eq. 16): ``O_i = sum_j a_ij (z_j - z_i) W``, ``a_ij = softmax_j(theta_i . phi_j)``.

    ``A`` is computed once from the stage input and shared by every unit.
    """
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    a = softmax_rows(scale * tokens(conv1x1(xf, block.theta)) @ conv1x1(xf, block.phi))
    out = xf
    for unit in _units(block):
        z = tokens(conv1x1(out, unit.g))
        diff = z[:, None, :, :] - z[:, :, None, :]  # diff[b, i, j] = z_j - z_i
        o = torch.einsum('bij,bijc->bic', a, diff)
        out = out + _finish(conv1x1(tokens(o), unit.w), unit, training)
    return out.reshape(x.shape)


def shared_snl_reference(block: nn.Module, x: Tensor, training: bool = False) -> Tensor:
    """SNL's symmetric normalised affinity with NS's shared weight: ``X + norm((A Z - Z) W)``."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    a = snl_affinity(conv1x1(xf, block.theta), conv1x1(xf, block.phi))
    z = tokens(conv1x1(xf, block.g))
    y = conv1x1(tokens(a @ z - z), block.w)
    return (xf + _finish(y, block, training)).reshape(x.shape)


def nl_reference(block: nn.Module, x: Tensor, training: bool = False) -> Tensor:
    """NL (Appendix B.1, Eq. 11) with mmcv's modes, ``use_scale`` and ``sub_sample``."""
    b, c = x.shape[:2]
    xf = x.reshape(b, c, -1)
    cs = block.inner_channels

    def embed(conv: Optional[nn.Module]) -> Tensor:
        """Projection (or ``x`` itself), max-pooled spatially with ``sub_sample``: ``(B, c, N')``."""
        e = xf if conv is None else conv1x1(xf, conv)
        if block.sub_sample:
            e = max_pool_spatial(e.reshape(b, -1, *x.shape[2:])).reshape(b, e.shape[1], -1)
        return e

    g_conv = block.g[0].conv if block.sub_sample else block.g.conv
    z = tokens(embed(g_conv))
    if block.mode == 'gaussian':
        a = softmax_rows(tokens(xf) @ embed(None))
    else:
        theta = tokens(conv1x1(xf, block.theta.conv))
        phi = embed(block.phi[0].conv if block.sub_sample else block.phi.conv)
        logits = theta @ phi
        if block.mode == 'dot_product':
            a = logits / logits.shape[-1]
        else:
            a = softmax_rows(logits / cs ** 0.5 if block.use_scale else logits)
    y = conv1x1(tokens(a @ z), block.conv_out.conv)
    y = output_norm(y, block.conv_out.norm if block.conv_out.with_norm else None, training)
    return (xf + y).reshape(x.shape)
