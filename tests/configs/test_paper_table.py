"""Every reproduction config against the paper: for each row of Tables 2-8, the resolved config's optimiser, learning
rate, warm-up, milestones and epochs, the block's type and arguments, where the built model has its blocks
(``model.backbone.plugin_paths``) and how the network is initialised, against the values written in this file.

The schedules are also run: mmengine's schedulers, built from each config, give per epoch the learning rate that
the paper's training script (zh460045050/SNL_ICCV2021, ``SNL-Classification/train_val.py``) sets, re-implemented
here from its description: ``lrs = linspace(lr * 0.1^len(drops), lr, 10)`` for the 10 warm-up epochs, then
``lr / 10`` at each epoch ``drop + 10``.
"""
import re
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim.scheduler import _ParamScheduler
from mmengine.registry import MODELS, PARAM_SCHEDULERS, DefaultScope

from tests.helpers import randomise_, rel_err

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'

# ---------------------------------------------------------------------------------------------------------------
# The paper's settings, per task (Sec. 3.1, Sec. 3.2, Appendix C.1, and the training script where it differs).
# warm-up: (epochs, start factor); milestones: epochs after the warm-up; epochs: all, warm-up included.
# ---------------------------------------------------------------------------------------------------------------
SCHEDULES = {
    'cifar': dict(lr=0.1, momentum=0.9, weight_decay=1e-4, warmup=(10, 0.01), milestones=(150, 250), epochs=310,
                  batch=128),
    'imagenet': dict(lr=0.01, momentum=0.9, weight_decay=1e-4, warmup=(10, 0.001), milestones=(31, 61, 81),
                     epochs=110, batch=100),
    'ucf101': dict(lr=0.01, momentum=0.9, weight_decay=1e-4, warmup=None, milestones=(40, 80), epochs=100,
                   batch=64),
}
SCHEDULES['cub'] = SCHEDULES['imagenet']  # the script has no CUB branch: `--dataset cub` takes the ImageNet one

# the block of each row, as the resolved config gives it (``plugins[i].cfg``)
BLOCKS = {
    'nl': dict(type='NLBlock', reduction=2, use_scale=False),
    'nl_scaled': dict(type='NLBlock', reduction=2, use_scale=True),
    'ns': dict(type='NSBlock', reduction=2, bias=False),
    'a2': dict(type='GraphNonlocalBlock', reduction=2,
               affinity=dict(kernel='relu_dot', symmetrize=False, normalize='none'),
               graph_filter=dict(order=2, terms=(1, ))),
    'a2_double_attention': dict(type='A2Block', reduction=2),
    'cgnl': dict(type='CGNLBlock', reduction=2, groups=1, kernel='gaussian', order=2),
    'cgnlx_g8': dict(type='CGNLBlock', reduction=2, groups=8, kernel='gaussian', order=3),
    'snl': dict(type='SNLBlock', reduction=2),
}
ABBR = {'NLBlock': 'nl_block', 'NSBlock': 'ns_block', 'GraphNonlocalBlock': 'graph_nonlocal', 'A2Block': 'a2_block',
        'CGNLBlock': 'cgnl_block', 'SNLBlock': 'snl_block'}

# where the blocks are: (stage, unit after which the block runs) in the built backbone, or a replaced module path
RES1_AFTER_SECOND = [('layer1', 1)]            # PreResNet-56: right after the second unit of res1 (Sec. 3.1)
RES4_BEFORE_LAST = [('layer3', -2)]            # ResNet-50 / 3D ResNet-50: right before the last unit of res4
RES3_BEFORE_LAST = [('layer2', -2)]            # R(2+1)D: right before the last unit of res3 (Appendix C.1)
STAGE2, STAGE3 = [('layer2', 1)], [('layer3', 1)]
X3 = [('layer1', 1), ('layer2', 1), ('layer3', 1)]
TIMESFORMER_ATTENTION = 'transformer_layers.layers.3.attentions.1'

#: initialisation: 'scratch', or the checkpoint a config starts from (its file name)
SCRATCH = 'scratch'
IMAGENET = 'resnet50_8xb32_in1k_20210831-ea4938fc.pth'
HARA_K400 = 'r3d50_hara_kinetics400.pth'
R2PLUS1D_K400 = 'r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb_20220812-47cfe041.pth'
TIMESFORMER_K400 = 'timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb_20220815-a4d0d01f.pth'


def _row(table: str, row: str, paper: str, config: str, task: str, block: Optional[str], where,
         init: str = SCRATCH, reduction: int = 2) -> tuple:
    expected = None if block is None else dict(BLOCKS[block], reduction=reduction)
    return pytest.param(config, task, expected, where, init, paper, id=f'{table}:{row}')


PRN = 'cifar/preresnet56{}_8xb16-300e_cifar100.py'
ABL = 'cifar/ablation/preresnet56-{}-{}_8xb16-300e_cifar100.py'
R50C = 'cifar/resnet50{}_8xb16-300e_cifar{}.py'
IN1K = 'imagenet/resnet50{}_8xb32-110e_in1k.py'
CUB = 'cub/resnet50{}_8xb8-110e_cub.py'
R3D = 'ucf101/r3d50{}_k400-pretrained_8xb8-16x1x1-100e_ucf101-split1-rgb.py'
ROW_LABEL = {'nl': 'NL', 'ns': 'NS', 'a2': 'A2', 'cgnl': 'CGNL', 'snl': 'Ours'}
#: the paper's numbers (top-1 / top-5 where given), as the README's tables print them
T2 = {'nl': ('75.29 / 94.07', '75.31 / 92.84', '75.50 / 93.75'),
      'ns': ('75.39 / 93.00', '75.83 / 93.87', '75.61 / 93.66'),
      'a2': ('75.51 / 92.90', '75.58 / 94.27', '75.61 / 93.61'),
      'cgnl': ('74.71 / 93.60', '75.75 / 93.74', '75.27 / 93.05'),
      'snl': ('76.34 / 94.48', '76.41 / 94.38', '76.02 / 94.08')}
T3 = {'nl': ('75.64 / 93.79', '75.28 / 93.93'), 'ns': ('75.74 / 94.02', '75.44 / 93.86'),
      'a2': ('75.60 / 93.82', '75.21 / 93.65'), 'cgnl': ('74.54 / 92.65', '74.90 / 92.46'),
      'snl': ('76.29 / 94.27', '75.68 / 93.90')}
T4 = {'nl': '74.34 / 93.11', 'ns': '75.00 / 93.57', 'a2': '75.63 / 94.12', 'cgnl': '75.96 / 93.10',
      'snl': '76.70 / 93.94'}
T5 = {None: ('94.94 / 99.87', '76.50 / 93.14'), 'nl': ('94.01 / 99.82', '76.77 / 93.55'),
      'ns': ('95.15 / 99.88', '77.90 / 94.34'), 'a2': ('94.41 / 99.83', '77.30 / 93.40'),
      'cgnl': ('94.49 / 99.92', '74.88 / 92.56'), 'snl': ('95.32 / 99.94', '78.17 / 94.17')}
#: Table 6: top-1, config suffix, block (the rows other than SNL are quoted by the paper from their own papers)
T6 = {None: ('76.15', '', None), 'nl': ('76.70', '-nl', 'nl_scaled'), 'a2': ('77.00', '-a2', 'a2_double_attention'),
      'cgnl': ('77.32', '-cgnlx-g8', 'cgnlx_g8'), 'snl': ('78.11', '-snl', 'snl')}
T7 = {None: ('85.43', '81.57'), 'nl': ('85.34', '82.88'), 'ns': ('85.54', '82.50'), 'a2': ('85.91', '82.68'),
      'cgnl': ('86.14', '83.38'), 'snl': ('86.02', '84.39')}

ROWS = [_row('T2-5', 'PreResNet56', '75.33 / 93.97', PRN.format(''), 'cifar', None, [])]
for b in ('nl', 'ns', 'a2', 'cgnl', 'snl'):
    ROWS += [
        _row('T2', f'{ROW_LABEL[b]} C', T2[b][0], ABL.format(b, 'r1'), 'cifar', b, RES1_AFTER_SECOND, reduction=1),
        _row('T2-5', f'{ROW_LABEL[b]} C/2', T2[b][1], PRN.format(f'-{b}'), 'cifar', b, RES1_AFTER_SECOND),
        _row('T2', f'{ROW_LABEL[b]} C/4', T2[b][2], ABL.format(b, 'r4'), 'cifar', b, RES1_AFTER_SECOND, reduction=4),
        _row('T3', f'{ROW_LABEL[b]} stage 2', T3[b][0], ABL.format(b, 'stage2'), 'cifar', b, STAGE2),
        _row('T3', f'{ROW_LABEL[b]} stage 3', T3[b][1], ABL.format(b, 'stage3'), 'cifar', b, STAGE3),
        _row('T4', f'{ROW_LABEL[b]} x3', T4[b], ABL.format(b, 'x3'), 'cifar', b, X3),
    ]
for b, (c10, c100) in T5.items():
    suffix, label, where = ('', 'backbone', []) if b is None else (f'-{b}', ROW_LABEL[b], RES4_BEFORE_LAST)
    ROWS += [_row('T5', f'CIFAR-10 ResNet50 {label}', c10, R50C.format(suffix, 10), 'cifar', b, where),
             _row('T5', f'CIFAR-100 ResNet50 {label}', c100, R50C.format(suffix, 100), 'cifar', b, where)]
for b, (top1, suffix, block) in T6.items():
    label, where = ('ResNet50', []) if b is None else (ROW_LABEL[b], RES4_BEFORE_LAST)
    ROWS.append(_row('T6', label, top1, IN1K.format(suffix), 'imagenet', block, where))
for b, (cub, ucf) in T7.items():
    suffix, label, where = ('', 'backbone', []) if b is None else (f'-{b}', ROW_LABEL[b], RES4_BEFORE_LAST)
    ROWS += [_row('T7', f'CUB {label}', cub, CUB.format(suffix), 'cub', b, where, IMAGENET),
             _row('T7', f'UCF-101 {label}', ucf, R3D.format(suffix), 'ucf101', b, where, HARA_K400)]
ROWS += [
    _row('T8', 'P3D', '81.23', 'ucf101/r2plus1d_r34_k400-pretrained_8xb8-8x8x1-100e_ucf101-split1-rgb.py', 'ucf101',
         None, [], R2PLUS1D_K400),
    _row('T8', 'P3D + Ours', '82.65', 'ucf101/r2plus1d_r34-snl_k400-pretrained_8xb8-8x8x1-100e_ucf101-split1-rgb.py',
         'ucf101', 'snl', RES3_BEFORE_LAST, R2PLUS1D_K400),
    _row('T8', 'VTN', '90.06', 'ucf101/timesformer_divST_k400-pretrained_8xb8-8x32x1-100e_ucf101-split1-rgb.py',
         'ucf101', None, [], TIMESFORMER_K400),
    _row('T8', 'VTN + Ours', '90.34',
         'ucf101/timesformer_divST-snl_k400-pretrained_8xb8-8x32x1-100e_ucf101-split1-rgb.py', 'ucf101', 'snl',
         TIMESFORMER_ATTENTION, TIMESFORMER_K400),
]


# ---------------------------------------------------------------------------------------------------------------
def script_lrs(lr: float, drops: Tuple[int, ...], epochs: int, warmup: int = 10) -> List[float]:
    """The learning rate of each epoch as the paper's script sets it (``adjust_learning_rate`` with warm-up)."""
    ramp = np.linspace(lr * 0.1**len(drops), lr, num=warmup)
    shifted = [d + warmup for d in drops]
    out, current = [], lr
    for epoch in range(epochs):
        if epoch < warmup:
            out.append(float(ramp[epoch]))
        else:
            current *= 0.1 if epoch in shifted else 1.0
            out.append(current)
    return out


def config_lrs(cfg: Config) -> List[float]:
    """The learning rate of each epoch under the config's optimiser and mmengine's schedulers built from it."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = cfg.optim_wrapper.optimizer
    optimizer = torch.optim.SGD([param], lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    schedulers: List[_ParamScheduler] = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
                                         for s in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for s in schedulers:
            s.step()
    return lrs


def check_schedule(cfg: Config, task: str) -> None:
    want = SCHEDULES[task]
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'SGD'
    assert (opt.lr, opt.momentum, opt.weight_decay) == (want['lr'], want['momentum'], want['weight_decay'])
    assert cfg.train_cfg.max_epochs == want['epochs']
    assert cfg.auto_scale_lr.base_batch_size == want['batch']
    schedulers = list(cfg.param_scheduler)
    assert all(s.by_epoch for s in schedulers)
    if want['warmup'] is not None:
        warmup, step = schedulers
        epochs, start = want['warmup']
        assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, epochs)
        assert warmup.start_factor == pytest.approx(start) and warmup.end_factor == 1.0
        assert step.type == 'MultiStepLR' and step.begin == epochs and step.gamma == 0.1
    else:
        (step, ) = schedulers
        assert step.type == 'MultiStepLR' and step.get('begin', 0) == 0 and step.gamma == 0.1
    # mmengine counts milestones from the scheduler's `begin`: these are epochs after the warm-up
    assert tuple(step.milestones) == want['milestones']


def build_backbone(cfg: Config):
    """The config's backbone, initialised; a checkpoint it would load is left out (:func:`initialisation` checks
    which one it names)."""
    backbone = cfg.model.backbone.copy()
    if isinstance(backbone.get('init_cfg'), dict) and backbone.init_cfg.get('type') == 'Pretrained':
        backbone.pop('init_cfg')
    if 'img_size' in backbone:  # a transformer: where its blocks are does not depend on the frame size, and the
        backbone.img_size = 32  # build-time check would run a ViT-B on 8 frames of 224 x 224
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(backbone)
    model.init_weights()
    return model


def expected_paths(backbone, where, block: dict) -> List[str]:
    if isinstance(where, str):  # a replaced module: the block takes its place
        return [f'{where}.{ABBR[block["type"]]}']
    paths = []
    for stage, unit in where:
        units = len(backbone.get_submodule(stage))
        paths.append(f'{stage}.{unit % units}.{ABBR[block["type"]]}')
    return paths


def initialisation(cfg: Config) -> str:
    init = cfg.model.backbone.get('init_cfg')
    if isinstance(init, dict) and init.get('type') == 'Pretrained':
        assert cfg.get('load_from') is None and init.prefix == 'backbone'
        return Path(init.checkpoint).name
    return Path(cfg.load_from).name if cfg.get('load_from') else SCRATCH


@pytest.mark.parametrize('config, task, block, where, init, paper', ROWS)
def test_row(config, task, block, where, init, paper):
    cfg = Config.fromfile(str(CONFIGS / config))
    check_schedule(cfg, task)
    assert initialisation(cfg) == init
    assert cfg.custom_imports == dict(imports=['snl_mm', 'snl_mm.compat'], allow_failed_imports=False)

    entries = cfg.model.backbone.get('plugins') or []
    if block is None:
        assert entries == [], 'a baseline row has no block'
        return
    assert [e.cfg.to_dict() for e in entries] == [block] * len(entries)

    backbone = build_backbone(cfg)
    paths = backbone.plugin_paths
    assert paths == expected_paths(backbone, where, block)
    for path in paths:
        unit = backbone.get_submodule(path)
        assert type(unit).__name__ == block['type']
        assert unit.inner_channels == unit.in_channels // block['reduction']
        # identity at init: the block leaves its input unchanged, so the pretrained network is what it was
        shape = (2, unit.in_channels) + (3, ) * (3 if task == 'ucf101' and isinstance(where, list) else 2)
        x = torch.randn(*shape)
        unit.eval()
        with torch.no_grad():
            assert torch.equal(unit(x), x), path


def test_imagenet_snl_milestones_after_warmup():
    """The ImageNet schedule: lr 0.01, 10 warm-up epochs, / 10 after 31, 61 and 81 of the 100 that follow."""
    cfg = Config.fromfile(str(CONFIGS / 'imagenet/resnet50-snl_8xb32-110e_in1k.py'))
    warmup, step = cfg.param_scheduler
    assert warmup.end - warmup.begin == 10 and step.begin == 10
    assert step.milestones == [31, 61, 81] and cfg.train_cfg.max_epochs == 110
    lrs = config_lrs(cfg)
    assert lrs == pytest.approx(script_lrs(0.01, (31, 61, 81), 110), rel=1e-12)
    drops = [e for e in range(1, 110) if lrs[e] < lrs[e - 1] * 0.5]
    assert drops == [41, 71, 91]
    assert lrs[0] == pytest.approx(1e-5) and lrs[9] == pytest.approx(0.01) and lrs[10] == pytest.approx(0.01)


@pytest.mark.parametrize('config, drops, lr', [
    ('cifar/preresnet56-snl_8xb16-300e_cifar100.py', (150, 250), 0.1),
    ('cifar/resnet50_8xb16-300e_cifar10.py', (150, 250), 0.1),
    ('cub/resnet50-snl_8xb8-110e_cub.py', (31, 61, 81), 0.01),
])
def test_schedule_is_the_scripts(config, drops, lr):
    cfg = Config.fromfile(str(CONFIGS / config))
    lrs = config_lrs(cfg)
    assert len(lrs) == 10 + (300 if lr == 0.1 else 100)
    assert lrs == pytest.approx(script_lrs(lr, drops, len(lrs)), rel=1e-12)


def test_ucf101_schedule_steps_every_40_epochs():
    cfg = Config.fromfile(str(CONFIGS / R3D.format('-snl')))
    lrs = config_lrs(cfg)
    assert lrs == pytest.approx([0.01] * 40 + [0.001] * 40 + [0.0001] * 20, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
def readme_section() -> str:
    text = (REPO / 'README.md').read_text()
    start = text.index('## Reproducing the paper')
    end = text.index('\n## ', start + 1)
    return text[start:end]


def test_readme_names_each_rows_config_and_number():
    """README "Reproducing the paper": each row of this file is a table line naming its config and the paper's
    number; every config the section names exists."""
    section = readme_section()
    lines = section.splitlines()
    for param in ROWS:
        config, paper = param.values[0], param.values[5]
        hits = [line for line in lines if f'`{config}`' in line and line.startswith('|')]
        assert hits, f'{config} ({param.id}) is in no table line of the README section'
        assert any(paper in line for line in hits), f'{param.id}: {paper} is not on the line of `{config}`'
    named = set(re.findall(r'`((?:cifar|imagenet|cub|ucf101)/[\w./-]+\.py)`', section))
    missing = sorted(c for c in named if not (CONFIGS / c).is_file())
    assert not missing, missing


def test_spectral_a2_baseline_is_the_codes_a2_unit():
    """``nonlocal_blocks.a2`` computes the paper's code's ``a2`` unit (``Stage.DotKernel`` without ``is_norm`` or
    ``is_sys``, then ``NLUnit`` up to its last ReLU): ``x + bn(W (relu(t) relu(p)^T) g)``, float64 reference."""
    blocks = Config.fromfile(str(CONFIGS / '_base_/blocks.py')).nonlocal_blocks
    block = MODELS.build(dict(blocks.a2, in_channels=8)).double()
    randomise_(block, seed=2).eval()
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    w = block.state_dict()

    def conv(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w[f'{name}.weight'])

    t, p, g = (conv(n, x).flatten(2) for n in ('theta', 'phi', 'g'))
    att = torch.relu(t).transpose(1, 2) @ torch.relu(p)  # (B, N, N), no normalisation
    y = conv('w2', (att @ g.transpose(1, 2)).transpose(1, 2).reshape(2, 4, 5, 3))
    y = F.batch_norm(y, w['norm.running_mean'], w['norm.running_var'], w['norm.weight'], w['norm.bias'], False, 0.0,
                     block.norm.eps)
    with torch.no_grad():
        assert rel_err(block(x), x + y) < 1e-12
    assert sorted(k.split('.')[0] for k in w if k.endswith('weight')) == ['g', 'norm', 'phi', 'theta', 'w2']
