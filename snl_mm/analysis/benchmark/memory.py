"""Peak memory of a piece of code: the CUDA caching allocator's counters, or on the CPU the profiler's memory
records (every tensor allocation and free), and the process's resident set.

On the CPU the resident set is no measure at the scale of one block: glibc keeps freed blocks for reuse, so
a run's peak hides behind the previous run's. The profiler's records see every tensor allocation instead; the
resident-set growth (``VmHWM`` after a reset through ``/proc/self/clear_refs``) is offered as a second view
that also sees buffers an operator allocates and frees internally.
"""
import contextlib
import gc
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch
from torch._C._autograd import DeviceType

MIB = 2**20


@dataclass
class MemoryProfile:
    """The profiler's memory records of one run, in time order.

    Attributes:
        records (list[tuple[int, int]]): ``(time ns, bytes)`` per CPU tensor allocation (bytes > 0) and
            free (bytes < 0) during the run.
        rss_growth (int, optional): growth of the process's peak resident set over the run (bytes); None
            when not asked for or when the kernel does not allow resetting the peak.
        profiler: the finished ``torch.profiler.profile`` (operator events).
    """

    records: List[Tuple[int, int]]
    rss_growth: Optional[int]
    profiler: Any

    @property
    def peak_bytes(self) -> int:
        """The peak of the running sum of the records: the most memory the run held at once."""
        live = peak = 0
        for _, nbytes in self.records:
            live += nbytes
            peak = max(peak, live)
        return peak

    @property
    def largest_allocation(self) -> int:
        """The largest single allocation of the run (bytes; 0 when there was none)."""
        return max((nbytes for _, nbytes in self.records), default=0)

    @property
    def largest_operator(self) -> int:
        """The most memory any single operator allocated, its children included (bytes): a bound on every
        buffer allocated inside it."""
        return max((e.cpu_memory_usage for e in self.profiler.events()), default=0)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence the profiler's native start/stop lines (written to file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_memory(run: Callable[[], Any], rss: bool = False, record_shapes: bool = False) -> MemoryProfile:
    """Run ``run()`` once under ``torch.profiler`` with memory records.

    Args:
        run (callable): what to measure.
        rss (bool): also measure the growth of the process's peak resident set over the run.
        record_shapes (bool): record the operators' input shapes (for reading the events).

    Returns:
        MemoryProfile: the CPU allocation records and the profiler.
    """
    from torch.profiler import ProfilerActivity, profile
    growth = None
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                                 record_shapes=record_shapes) as prof:
        can_reset = rss and reset_peak_rss()
        base = resident_bytes('VmRSS') if can_reset else 0
        run()
        if can_reset:
            growth = resident_bytes('VmHWM') - base
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == '[memory]' and e.device_type() == DeviceType.CPU)
    return MemoryProfile(records, growth, prof)


def peak_memory_mib(run: Callable[[], Any], device: torch.device) -> float:
    """Extra peak memory (MiB) of ``run()`` over what is allocated before it.

    CUDA: the caching allocator's peak (``max_memory_allocated``) minus what was allocated before. CPU: the
    profiler's memory records (every tensor allocation and free of the run): the peak of their running sum.
    """
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MIB
    return profile_memory(run).peak_bytes / MIB


def resident_bytes(field: str = 'VmRSS') -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``...) in bytes."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set (``VmHWM``) to its current size; False where not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False
