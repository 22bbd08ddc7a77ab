"""How a model with nonlocal blocks fares under the tracers and exporters, and in half precision: the library
behind ``tools/analysis/check_deploy.py``.

Each check builds on PyTorch's own tools and compares with eager float32 on the same weights and input:

* :func:`compile_check`: ``torch._dynamo.explain`` (graph breaks), then ``torch.compile(fullgraph=True)`` with a
  backend (inductor by default), forward and backward;
* :func:`fx_check`: ``torch.fx.symbolic_trace``;
* :func:`export_check`: ``torch.export.export`` in eval mode;
* :func:`onnx_check`: ``torch.onnx.export`` (dynamo or TorchScript), run in onnxruntime on the CPU;
* :func:`autocast_check`: the block's contribution (output minus input) under bf16 / fp16 autocast.
"""
import copy
import os
import tempfile
import time
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _forward_backward(model: nn.Module, x: Tensor, forward) -> Dict[str, Tensor]:
    """Output, input gradient and all parameter gradients (one vector) of ``sum(forward(x) * w)``, ``w`` fixed."""
    x = x.detach().clone().requires_grad_()
    model.zero_grad(set_to_none=False)
    y = forward(x)
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(y.device)
    (y * weight).sum().backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return dict(output=y.detach(), input_grad=x.grad, param_grads=torch.cat(grads))


def compile_check(block: nn.Module, x: Tensor, backend: str = 'inductor') -> Dict:
    """Graph breaks (``torch._dynamo.explain``) and ``torch.compile(block, fullgraph=True, backend=backend)``
    against eager, forward and backward, in train mode.

    Returns:
        dict: ``graph_breaks``, ``graphs``, ``compile_s`` (first compiled forward + backward, compilation
        included) and ``err_output``, ``err_input_grad``, ``err_param_grads`` (relative).
    """
    block = block.train()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(block)(x.clone().requires_grad_())
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    eager = _forward_backward(block, x, block)
    start = time.perf_counter()
    traced = _forward_backward(block, x, compiled)
    seconds = time.perf_counter() - start
    torch._dynamo.reset()
    out = dict(graph_breaks=explanation.graph_break_count, graphs=explanation.graph_count, compile_s=seconds)
    out.update({f'err_{key}': _rel(traced[key], value) for key, value in eager.items()})
    return out


def fx_check(block: nn.Module, x: Tensor) -> Dict:
    """``torch.fx.symbolic_trace`` of ``block`` in eval mode: ``err`` (max abs against eager) and ``nodes``."""
    block = block.eval()
    traced = torch.fx.symbolic_trace(block)
    with torch.no_grad():
        err = (traced(x) - block(x)).abs().max().item()
    return dict(err=err, nodes=len(traced.graph.nodes))


def export_check(model: nn.Module, x: Tensor) -> Dict:
    """``torch.export.export`` in eval mode (parameters requiring grad): ``err`` (max abs against eager)."""
    model = model.eval()
    program = torch.export.export(model, (x, ))
    with torch.no_grad():
        err = (_last(program.module()(x)) - _last(model(x))).abs().max().item()
    return dict(err=err)


def _last(y):
    return y[-1] if isinstance(y, (tuple, list)) else y


def onnx_check(model: nn.Module, x: Tensor, dynamo: bool, path: Optional[str] = None) -> Dict:
    """``torch.onnx.export`` (``dynamo``: the torch.export-based exporter, else TorchScript) of ``model`` in eval
    mode, run in onnxruntime on the CPU.

    Returns:
        dict: ``max_abs_err`` against eager, ``max_abs`` of the eager output, ``export_s``.
    """
    import onnxruntime
    model = model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = path or os.path.join(tmp, 'model.onnx')
        start = time.perf_counter()
        torch.onnx.export(model, (x, ), path, dynamo=dynamo, input_names=['x'])
        seconds = time.perf_counter() - start
        session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
        got = torch.from_numpy(session.run(None, {'x': x.numpy()})[0])
    with torch.no_grad():
        expected = _last(model(x))
    return dict(max_abs_err=(got - expected).abs().max().item(), max_abs=expected.abs().max().item(),
                export_s=seconds)


def autocast_check(block: nn.Module, x: Tensor) -> Dict:
    """Relative error of the block's contribution (output minus input) under bf16 and fp16 autocast against
    float32, in eval mode, and whether the outputs are finite."""
    block = copy.deepcopy(block).eval()
    device = x.device.type
    with torch.no_grad():
        reference = block(x) - x
        out = {}
        for name, dtype in (('bf16', torch.bfloat16), ('fp16', torch.float16)):
            with torch.autocast(device, dtype=dtype):
                y = block(x)
            out[f'{name}_err'] = _rel(y.float() - x, reference)
            out[f'{name}_finite'] = bool(torch.isfinite(y).all())
    return out
