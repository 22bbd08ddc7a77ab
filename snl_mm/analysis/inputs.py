"""A config's model on a few real samples: what the analysis tools (attention maps, spectra) look at.

:func:`build_model` builds the model of a config as the Runner does (``custom_imports``, ``default_scope``, the
top-level ``data_preprocessor``) and loads a checkpoint; :func:`test_batch` runs samples of the config's test set
through its pipeline and the model's data preprocessor; :func:`catch_block_inputs` runs the model on them and
returns what each nonlocal block received, caught by forward pre-hooks, whatever the backbone or task.
"""
from contextlib import ExitStack
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn


def load_config(config: str, cfg_options: Optional[Dict] = None):
    """The config with ``cfg_options`` merged, its ``custom_imports`` imported and its default scope set."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    import snl_mm  # noqa: F401  (block and backbone registration)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return cfg


def build_model(cfg, checkpoint: Optional[str] = None, device: str = 'cpu') -> nn.Module:
    """The model of a loaded config in eval mode, the top-level ``data_preprocessor`` joined as the Runner does,
    with the weights of ``checkpoint`` when given (else as built: a fresh block is the identity)."""
    from mmengine.registry import MODELS
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def test_batch(cfg, model: nn.Module, num_samples: int, indices: Optional[Sequence[int]] = None
               ) -> Tuple[Any, List[dict], Dict[str, Any]]:
    """``num_samples`` samples of the config's test set (the first ones, or ``indices``) through the test pipeline
    and the model's data preprocessor.

    Returns:
        tuple: the dataset, the pipeline's samples (``inputs``, ``data_samples``), and the preprocessed batch.
    """
    from mmengine.registry import DATASETS
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if loader is None:
        raise KeyError('the config has no test_dataloader (nor val_dataloader) to take samples from')
    dataset = DATASETS.build(loader.dataset)
    if indices is None:
        indices = range(min(num_samples, len(dataset)))
    samples = [dataset[i] for i in indices]
    batch = model.data_preprocessor(
        dict(inputs=[s['inputs'] for s in samples], data_samples=[s['data_samples'] for s in samples]), False)
    return dataset, samples, batch


@torch.no_grad()
def catch_block_inputs(model: nn.Module, batch: Dict[str, Any], blocks: Dict[str, nn.Module]
                       ) -> Tuple[Any, Dict[str, torch.Tensor]]:
    """Run ``model`` in predict mode on ``batch``; return its predictions and the first input of each block.

    Raises:
        RuntimeError: a block was not called in the forward pass.
    """
    from .attention import record_input
    with ExitStack() as stack:
        caught = {name: stack.enter_context(record_input(block)) for name, block in blocks.items()}
        predictions = model(batch['inputs'], batch['data_samples'], mode='predict')
    missing = [name for name, inputs in caught.items() if not inputs]
    if missing:
        raise RuntimeError(f'blocks {missing} were not called in the forward pass')
    return predictions, {name: inputs[0] for name, inputs in caught.items()}
