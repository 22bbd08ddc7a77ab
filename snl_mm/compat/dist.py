"""Distributed training with mmengine 0.10.7 on machines without GPUs.

Upstream: mmengine has no tracked issue for this; the code in question is ``_init_dist_pytorch`` and
``_init_dist_slurm`` in ``mmengine/dist/utils.py`` and ``Runner.wrap_model`` in ``mmengine/runner/runner.py``
(0.10.7), which assume one CUDA device per process:

* the distributed start calls ``torch.cuda.set_device(local_rank)`` before ``init_process_group``, so
  ``tools/dist_train.sh CONFIG 2`` dies with ``RuntimeError: Found no NVIDIA driver`` whatever
  ``env_cfg.dist_cfg.backend`` says, and configs ask for ``nccl`` which needs GPUs anyway;
* the Runner wraps the model in ``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``, which torch refuses
  for a CPU module (``ValueError: DistributedDataParallel device_ids and output_device arguments only work
  with single-device/multiple-device GPU modules``);
* ``SyncBatchNorm`` (``norm_cfg=dict(type='SyncBN')`` in a model or ``sync_bn='torch'`` in a config) only
  runs on GPUs (``ValueError: SyncBatchNorm layers only work with GPU modules`` when DDP wraps it).

What snl_mm does, only where no accelerator is present (no CUDA, MLU, NPU or MUSA device): the pytorch and
slurm starts skip ``set_device`` and initialise ``torch.distributed`` with ``gloo`` when the config asks for
``nccl``; ``MMDistributedDataParallel`` around a CPU module drops ``device_ids``/``output_device`` and
reverts SyncBN layers to BN with a warning. On machines with GPUs the original functions run unchanged.
"""
import functools
import logging
import os
import subprocess
import warnings
from typing import Any, Callable, Optional

import mmengine.dist.utils as mmengine_dist_utils
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

#: backends that need an accelerator, and what a CPU-only machine uses instead.
CPU_BACKEND = {'nccl': 'gloo'}


class CPUFallbackWarning(UserWarning):
    """Emitted when a GPU-only distributed setting is replaced by its CPU equivalent."""


def cpu_only() -> bool:
    """Whether this process sees no accelerator mmengine knows (CUDA, MLU, NPU, MUSA)."""
    return not (is_cuda_available() or is_mlu_available() or is_npu_available() or is_musa_available())


def cpu_backend(backend: str) -> str:
    """The torch.distributed backend to use on a CPU-only machine for a configured ``backend``.

    Args:
        backend (str): the backend named in ``env_cfg.dist_cfg`` (``'nccl'``, ``'gloo'``, ``'mpi'``...).

    Returns:
        str: ``'gloo'`` for ``'nccl'``; any other backend unchanged.
    """
    replacement = CPU_BACKEND.get(backend, backend)
    if replacement != backend:
        warnings.warn(
            f'No GPU in this process: torch.distributed starts with backend={replacement!r} instead of the '
            f'configured {backend!r} (snl_mm.compat.dist).', CPUFallbackWarning, stacklevel=4)
    return replacement


def _init_dist_pytorch_cpu(backend: str, init_backend: str = 'torch', **kwargs: Any) -> None:
    """``torch.distributed.run`` (torchrun) start without ``torch.cuda.set_device``."""
    torch_dist.init_process_group(backend=cpu_backend(backend), **kwargs)


def _init_dist_slurm_cpu(backend: str, port: Optional[int] = None, init_backend: str = 'torch',
                         **kwargs: Any) -> None:
    """slurm start without ``torch.cuda.set_device``; mirrors mmengine's environment set-up."""
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        node_list = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    os.environ['WORLD_SIZE'] = str(ntasks)
    # mmengine derives the local rank from the GPU count when slurm does not give it: a CPU node has none.
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ['RANK'] = str(proc_id)
    torch_dist.init_process_group(backend=cpu_backend(backend), **kwargs)


def _cpu_start(original: Callable, cpu_version: Callable) -> Callable:
    """Wrap an mmengine start function: ``cpu_version`` on CPU-only machines with the torch init backend."""

    @functools.wraps(original)
    def start(backend, *args, **kwargs):
        if cpu_only() and kwargs.get('init_backend', 'torch') == 'torch':
            return cpu_version(backend, *args, **kwargs)
        return original(backend, *args, **kwargs)

    start.__snl_mm_patched__ = True
    return start


def _has_sync_bn(module: nn.Module) -> bool:
    return any(isinstance(m, nn.SyncBatchNorm) or type(m).__name__ == 'SyncBatchNorm' for m in module.modules())


def _on_cpu(module: nn.Module) -> bool:
    tensors = list(module.parameters()) + list(module.buffers())
    return all(t.device.type == 'cpu' for t in tensors)


def _wrap_ddp_init(original: Callable) -> Callable:

    @functools.wraps(original)
    def __init__(self, module: nn.Module, *args: Any, **kwargs: Any) -> None:
        if cpu_only() and _on_cpu(module):
            # torch only accepts device_ids for modules on an accelerator; None means "the module's device".
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
            if _has_sync_bn(module):
                print_log(
                    'No GPU in this process: SyncBatchNorm layers (from a SyncBN norm_cfg or `sync_bn` in the '
                    'config) are reverted to BatchNorm; each process normalises with its own batch statistics '
                    '(snl_mm.compat.dist).', logger='current', level=logging.WARNING)
                module = revert_sync_batchnorm(module)
        original(self, module, *args, **kwargs)

    __init__.__snl_mm_patched__ = True
    return __init__


def release_process_group() -> None:
    """Wait for every rank, then destroy the default process group (if one was started).

    mmengine's Runner leaves it alive until interpreter exit, where gloo's worker threads can be torn down
    while still joinable (``terminate called without an active exception``, exit code -6, on one rank of an
    otherwise finished run). The launchers call this when the run is over.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


class _Started(Exception):
    """Raised in place of ``torch.distributed.init_process_group`` while :func:`gap_present` tries a start."""


def gap_present() -> bool:
    """Whether mmengine's torchrun start fails on this machine before it reaches ``init_process_group`` (it calls
    ``torch.cuda.set_device`` without a GPU): tried once, with ``init_process_group`` replaced for the duration by
    a stop, on a machine with no accelerator (where the DDP wrapper's ``device_ids`` fail as well)."""
    if not cpu_only():
        return False
    saved = {key: os.environ.get(key) for key in ('RANK', 'LOCAL_RANK')}
    start = torch_dist.init_process_group

    def stop(*args: Any, **kwargs: Any) -> None:
        raise _Started

    try:
        os.environ.update({key: value or '0' for key, value in saved.items()})
        torch_dist.init_process_group = stop
        mmengine_dist_utils._init_dist_pytorch('gloo')
    except _Started:
        return False
    except Exception:  # noqa: BLE001 (what a CUDA call raises without a GPU varies)
        return True
    finally:
        torch_dist.init_process_group = start
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
    return False


def is_applied() -> bool:
    """Whether :func:`apply` has patched mmengine's distributed start and DDP wrapper."""
    return all(
        getattr(f, '__snl_mm_patched__', False)
        for f in (mmengine_dist_utils._init_dist_pytorch, mmengine_dist_utils._init_dist_slurm,
                  MMDistributedDataParallel.__init__))


def apply() -> bool:
    """Patch mmengine's distributed start and DDP wrapper where they fail without a GPU. Safe to call repeatedly.

    Returns:
        bool: True when the patches are in place; False on a machine with an accelerator (mmengine's code runs).
    """
    if not is_applied() and gap_present():
        mmengine_dist_utils._init_dist_pytorch = _cpu_start(mmengine_dist_utils._init_dist_pytorch,
                                                            _init_dist_pytorch_cpu)
        mmengine_dist_utils._init_dist_slurm = _cpu_start(mmengine_dist_utils._init_dist_slurm, _init_dist_slurm_cpu)
        MMDistributedDataParallel.__init__ = _wrap_ddp_init(MMDistributedDataParallel.__init__)
    return is_applied()
