"""mmaction2's TSM non-local models wrap residual blocks (``layer2.0.block`` + ``layer2.0.non_local_block``): their
checkpoints load, after ``tools/misc/rename_checkpoint_keys.py``, into TSM with the same blocks added by config, and
the two networks compute the same thing (the frames layout is TSM's own ``(N, T)`` grouping)."""
import copy
import subprocess

import torch
from mmengine.hub import get_config
from mmengine.registry import MODELS, init_default_scope

from tests.helpers import random_input, randomise_, randomise_norms_, rel_err

CONFIG = 'mmaction::recognition/tsm/tsm_imagenet-pretrained-r50-nl-embedded-gaussian_8xb16-1x1x8-50e_kinetics400-rgb.py'


def test_tsm_nonlocal_checkpoint_renamed_and_loaded(tmp_path, repo_root, python, subprocess_env):
    init_default_scope('mmaction')
    cfg = get_config(CONFIG).model.backbone
    cfg.update(pretrained=None, pretrained2d=False)
    upstream = MODELS.build(copy.deepcopy(cfg))
    nl = dict(cfg.non_local_cfg)
    plain = copy.deepcopy(cfg)
    del plain['non_local'], plain['non_local_cfg']
    entry = dict(cfg=dict(type='NLBlock', sub_sample=nl['sub_sample'], use_scale=nl['use_scale'], mode=nl['mode'],
                          norm_cfg=nl['norm_cfg']),
                 stages=tuple(any(s) for s in cfg.non_local),
                 blocks=tuple(tuple(i for i, on in enumerate(s) if on) for s in cfg.non_local),
                 name='non_local_block')
    model = MODELS.build(dict(plain, plugins=[entry]))

    randomise_norms_(upstream, seed=0)
    for name, module in upstream.named_modules():
        if name.endswith('non_local_block'):
            randomise_(module, std=0.01, seed=len(name))
    src, dst = tmp_path / 'tsm_nl.pth', tmp_path / 'tsm_nl_renamed.pth'
    torch.save({'state_dict': upstream.state_dict(), 'meta': {}}, src)
    proc = subprocess.run([python, str(repo_root / 'tools/misc/rename_checkpoint_keys.py'), str(src), str(dst),
                           '--rename', r'^(layer\d\.\d+)\.block\.=\1.'], env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    renamed = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    result = model.load_state_dict(renamed, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    model.eval()
    upstream.eval()
    x = random_input((2 * 8, 3, 32, 32))  # two videos of 8 segments
    with torch.no_grad():
        assert rel_err(model(x), upstream(x)) < 1e-5
