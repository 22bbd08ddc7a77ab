"""Benchmark of the nonlocal blocks: training-step time, peak memory and agreement with reference code.

For each case (a block and an input shape ``(B, C, *S)``) the benchmark runs, in one fresh process:

* ``block``: the package's block, built from the registry (zero-initialised output layers are given
  non-zero values first, so that the output is not the identity and the comparison means something);
* ``dense``: the dense formulation of the same block with the same weights. For SNL this is
  :class:`OfficialOrderSNL`, the order of products of the official SNL code (form ``M`` ``N x N``,
  symmetrise, normalise, ``bmm``); for the other graph blocks (NS, ``GraphNonlocalBlock``) the block itself
  with ``path='dense'`` (an explicit ``N x N`` affinity);
* ``mmcv``: mmcv's implementation where one exists, with the block's state dict: ``NonLocal1d/2d/3d`` for
  NL, the pure-PyTorch ``CrissCrossAttention`` (applied ``recurrence`` times, as CCNet does) for CC in 2D;
* ``products``: the block's floor, the time its matrix products alone take: the share of the forward +
  backward spent in GEMM-type operators (``mm``, ``bmm``, ``addmm``, convolutions, fused attention...,
  their self time in ``torch.profiler``) times the block's time; on CUDA the device time of the kernels
  those operators launch. It is read in the run's own dtype (bf16 products under bf16 autocast).

Measured figures:

* time of one forward + backward (train mode, gradients of the input and of every weight): the median of
  ``repeats`` runs after ``warmup`` runs, the implementations of a case interleaved round by round so that a
  change of machine load hits them alike (the ratios are what the benchmark is for);
* extra peak memory of one forward + backward (gradients included), over what the module, its input and
  the output gradient already hold: on CUDA from the allocator (``max_memory_allocated``); on CPU from the
  profiler's memory records, the peak of the running sum of every tensor allocation and free of the run
  (the resident set of the process is no measure at this scale: glibc keeps freed blocks for reuse, so a
  run's peak hides behind the previous run's);
* agreement: ``||y - y_block|| / ||y_block||`` for the output and the same for the input gradient, on the
  same input and weights (below 1e-5 in fp32: "the same numbers"); ``err_branch`` relates the output
  difference to what the block adds to its input (``y_block - x``), a stricter view.

``fp16`` / ``bf16`` run the fp32 modules under ``torch.autocast``, as mixed-precision training does; fp32 on
CUDA turns TF32 off, so that convolutions (mmcv) and matrix products (the blocks) share one arithmetic.

Beside the blocks, :mod:`.models` measures whole models (a Cityscapes FCN and its nonlocal heads, I3D with
blocks) in the format of mmsegmentation's model zoo: training memory and inference speed.

The modules: :mod:`.cases` (what is measured), :mod:`.references` (what a block is compared with),
:mod:`.memory` (peak memory), :mod:`.measure` (one case), :mod:`.model_step` (ResNet step, dense against
factored), :mod:`.models` (whole models), :mod:`.report` (tables and files).
"""
from .cases import DEVICES, DTYPES, IMPLEMENTATIONS, Case, build_block, excite, format_shape, parse_shape
from .measure import PRODUCT_OPS, TOLERANCE, Runner, measure_case, products_ms, run_benchmark
from .memory import MemoryProfile, peak_memory_mib, profile_memory
from .model_step import measure_model_step, measure_paths, run_model_step, run_paths
from .model_table import format_model_table, measure_model, run_models
from .references import REFERENCE_LIMIT_BYTES, OfficialOrderSNL, Recurrent, load_matching, reference
from .report import (CSV_FIELDS, format_scaling, format_table, machine_info, memory_scaling, plot_results,
                     ratio_table, write_results)

__all__ = [
    'DEVICES', 'DTYPES', 'IMPLEMENTATIONS', 'Case', 'build_block', 'excite', 'format_shape', 'parse_shape',
    'PRODUCT_OPS', 'TOLERANCE', 'Runner', 'measure_case', 'products_ms', 'run_benchmark', 'MemoryProfile',
    'peak_memory_mib', 'profile_memory', 'format_model_table', 'measure_model', 'run_models',
    'measure_model_step', 'measure_paths', 'run_model_step', 'run_paths', 'REFERENCE_LIMIT_BYTES',
    'OfficialOrderSNL', 'Recurrent', 'load_matching', 'reference', 'CSV_FIELDS', 'format_scaling', 'format_table',
    'machine_info', 'memory_scaling', 'plot_results', 'ratio_table', 'write_results'
]
