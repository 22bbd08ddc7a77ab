"""The sign convention of ``w2`` (docs/segmentation.md): the official SNL segmentation head's unit computes
``w_1 Z - w_2 A Z`` (``SNL-MMSeg/snl_head.py``); ``SNLBlock`` computes ``Z W1 + A Z W2``. With ``W2 = -w_2`` and the
keys renamed, the block computes what the official unit computes (float64 reference written from that code's
description: relu-dot affinity, symmetrised, ``D^-1/2 M D^-1/2``, then BN, ReLU and the residual)."""
import torch
import torch.nn.functional as F

from snl_mm.blocks import SNLBlock
from tests.helpers import randomise_, rel_err

C, CS = 8, 4


def official_unit(x, w):
    """The official head's SNLStage with one SNLUnit (``relu=True``), in eval mode, from its weights ``w``."""
    b, c, h, wd = x.shape
    t = F.conv2d(x, w['SNL.t.weight']).flatten(2).transpose(1, 2)
    p = F.conv2d(x, w['SNL.p.weight']).flatten(2)
    att = torch.bmm(torch.relu(t), torch.relu(p))
    att = (att + att.transpose(1, 2)) / 2
    d = att.sum(dim=2)
    d = torch.where(d != 0, d.clamp_min(1e-300).rsqrt(), torch.zeros_like(d))
    att = att * d.unsqueeze(1) * d.unsqueeze(2)
    g = F.conv2d(x, w['SNL.stages.0.g.weight'])
    x1 = F.conv2d(g, w['SNL.stages.0.w_1.weight'])
    ag = torch.bmm(att, g.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, CS, h, wd)
    out = x1 - F.conv2d(ag, w['SNL.stages.0.w_2.weight'])
    bn = {k: w[f'SNL.stages.0.bn.{k}'] for k in ('weight', 'bias', 'running_mean', 'running_var')}
    out = F.batch_norm(out, bn['running_mean'], bn['running_var'], bn['weight'], bn['bias'], False, 0.0, 1e-5)
    return torch.relu(out) + x


def test_official_head_weights_load_with_w2_negated():
    block = SNLBlock(C, inner_channels=CS, act_cfg=dict(type='ReLU'), init_cfg=dict(type='Constant', val=1))
    block = randomise_(block.double(), seed=1)
    block.eval()
    ours = block.state_dict()
    official = {'SNL.t.weight': ours['theta.weight'], 'SNL.p.weight': ours['phi.weight'],
                'SNL.stages.0.g.weight': ours['g.weight'], 'SNL.stages.0.w_1.weight': ours['w1.weight'],
                'SNL.stages.0.w_2.weight': -ours['w2.weight']}
    for k in ('weight', 'bias', 'running_mean', 'running_var'):
        official[f'SNL.stages.0.bn.{k}'] = ours[f'norm.{k}']
    x = torch.randn(2, C, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(block(x), official_unit(x, official)) < 1e-12
        # the same weights without the sign change are a different filter
        official['SNL.stages.0.w_2.weight'] = ours['w2.weight']
        assert rel_err(block(x), official_unit(x, official)) > 1e-3
