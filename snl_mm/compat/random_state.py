"""The global random states a training process draws from, as data a checkpoint can hold.

Python's ``random``, numpy's global generator (mmcv's transforms, e.g. ``RandomFlip``, draw from it), torch's
CPU generator (dropout, the DataLoader's worker seeds) and every CUDA device's generator. :func:`capture`
returns them as containers of numbers and tensors only, which ``torch.load(weights_only=True)`` reads without
any allowed global; :func:`restore` sets them back.
"""
import contextlib
import random
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch

RandomState = Dict[str, Any]


def capture() -> RandomState:
    """The current global random states of this process.

    Returns:
        dict: ``python`` (``random.getstate()``), ``numpy`` (the MT19937 key as an int64 tensor, position and
        cached Gaussian), ``torch`` (CPU generator state) and ``cuda`` (one state per visible device; empty
        without CUDA).
    """
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return dict(
        python=random.getstate(),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos), has_gauss=int(has_gauss),
                   cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
        # CUDA not initialised yet: nothing has drawn from its generators (and capturing would initialise it)
        cuda=list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() and torch.cuda.is_initialized()
        else [],
    )


def restore(state: RandomState) -> Optional[str]:
    """Set this process's global random states to ``state`` (from :func:`capture`).

    Args:
        state (dict): what :func:`capture` returned, possibly through a checkpoint loaded onto a GPU.

    Returns:
        str | None: why the CUDA states were not restored (a different number of devices), else None.
    """
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state['numpy']
    np.random.set_state(('MT19937', numpy['keys'].cpu().numpy().astype(np.uint32), numpy['pos'],
                         numpy['has_gauss'], numpy['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    cuda: List[torch.Tensor] = state.get('cuda') or []
    if not cuda:
        return None
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices != len(cuda):
        return f'the checkpoint holds the generators of {len(cuda)} CUDA devices, this process sees {devices}'
    torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    return None


@contextlib.contextmanager
def isolated() -> Iterator[RandomState]:
    """Run a block without consuming this process's random streams: the states on entry are restored on exit.

    Yields:
        dict: the states captured on entry.
    """
    state = capture()
    try:
        yield state
    finally:
        restore(state)
