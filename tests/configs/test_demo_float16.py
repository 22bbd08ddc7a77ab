"""The demo network (``configs/demo/preresnet20-snl_relation.py``: PreResNet-20's first stage with one SNL block)
trains under float16 autocast with a ``GradScaler`` on batches that hold a constant (black) image: after the
scaler's first adjustment, if any, no step is skipped, so the scale stays where it is.

A non-finite gradient makes the scaler skip the step and halve its scale; one the block makes from nothing (not a
large gradient, which a lower scale brings into range) is non-finite at every scale, so that every step is
skipped and training stalls. Such a gradient came from the SNL block on constant maps (a ``0 / 0`` in the backward
of its float16 rebalancing): the scale halved at every one of the 20 iterations.

The model and the dataset are the config's, built by the upstream registries; the images are 16 x 16 instead of
32 x 32 and the batches hold 2 images (one generated, one black): the CPU's float16 convolution backward runs on a
fallback kernel, about 100x slower than bfloat16's (measured: 1.5 s against 0.016 s for the 16-channel 3 x 3
convolution on 8 images of 32 x 32). mmengine's ``AmpOptimWrapper`` asks for an accelerator, so the loop is the
one it runs, with ``torch.amp.GradScaler('cpu')``.
"""
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from snl_mm.blocks import SNLBlock

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs/demo/preresnet20-snl_relation.py'
ITERATIONS = 20
#: smaller images, with the objects and their distance scaled to fit (``RelationDataset`` checks them)
RELATION = dict(img_size=16, object_size=5, min_distance=8)


def test_demo_trains_under_float16_autocast_without_skipped_steps():
    from mmpretrain.registry import DATASETS, MODELS

    cfg = Config.fromfile(CONFIG)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
        dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, num_samples=ITERATIONS, **RELATION))
    model.init_weights()
    model.train()
    (block, ) = [m for m in model.modules() if isinstance(m, SNLBlock)]
    optimizer_cfg = dict(cfg.optim_wrapper.optimizer)
    assert optimizer_cfg.pop('type') == 'SGD'
    optimizer = torch.optim.SGD(model.parameters(), **optimizer_cfg)
    scaler = torch.amp.GradScaler('cpu')

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny maps: the intra-op pool's hand-offs cost more than the kernels
    scales, losses = [scaler.get_scale()], []  # the scale before each step, and after the last
    try:
        for step in range(ITERATIONS):
            image = dataset[step]
            black = dict(image, inputs=torch.zeros_like(image['inputs']))  # a constant image: a black frame
            data = model.data_preprocessor(pseudo_collate([image, black]), True)
            with torch.autocast('cpu', dtype=torch.float16):
                loss = sum(v for k, v in model(**data, mode='loss').items() if 'loss' in k)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scales.append(scaler.get_scale())
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)

    assert all(map(torch.isfinite, map(torch.tensor, losses))), losses
    # the growth interval (2000 steps) is far: every change of the scale is a skipped step
    changes = [i for i in range(ITERATIONS) if scales[i + 1] != scales[i]]
    assert len(changes) <= 1, f'steps {changes} skipped (scales {scales})'
    assert block.norm.weight.abs().max() > 0, 'the block left the identity in no step'
    assert all(torch.isfinite(p).all() for p in model.parameters())
