"""Parameters and FLOPs of a model, and the added cost of its nonlocal blocks.

Counting follows mmengine's analysis (``mmengine.analysis.FlopAnalyzer``, fvcore's rules): one
multiply-accumulate is one FLOP, and only the operators with a handle count. mmengine's own handles cover
convolutions, ``linear``/``addmm``, ``bmm``, ``matmul``, ``einsum`` and the norms; the blocks also use
``scaled_dot_product_attention``, ``baddbmm`` (also in place), ``bmm`` into an ``out=`` buffer and broadcast
``matmul`` (its handle drops the broadcast batch of the second operand), so :func:`product_handles` adds or
replaces those. Elementwise work (softmax,
degrees, ReLU) is not counted, as in fvcore.

Two figures are given for the blocks:

* the full count: every counted operator of the blocks (their 1x1 convolutions, norms and matrix
  products) and all their parameters;
* the paper's counting (its Table 6): the multiply-accumulates of the blocks' 1x1 convolutions (run as
  convolutions, or as the equivalent ``linear`` map on a map in token layout, as CC does) and the number of
  their convolution weights. The paper gives these figures truncated to two decimals: NL's
  ``4 x 1024 x 512 = 2,097,152`` weights appear as ``+2.09M`` (rounding would give 2.10).
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

#: Table 6 of the paper: ResNet-50 + one block before the last block of res4, 224 x 224 input,
#: (added GFLOPs, added M parameters); NS and CC have no entry.
PAPER_TABLE6 = {
    'SNLBlock': (0.51, 2.62),
    'NLBlock': (0.41, 2.09),
    'CGNLBlock': (0.41, 2.09),
    'A2Block': (0.41, 2.62),
}
#: the operators a block's 1x1 convolutions run as (the paper's FLOP count)
POINTWISE_OPS = ('conv', 'linear')


def _shape(value) -> List[int]:
    from mmengine.analysis.jit_handles import get_shape
    shape = get_shape(value)
    if shape is None:
        raise ValueError('the traced operator has an input of unknown shape')
    return list(shape)


def _broadcast_batch(a: Sequence[int], b: Sequence[int]) -> int:
    return math.prod(torch.broadcast_shapes(tuple(a), tuple(b)))


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::matmul`` / ``aten::mm``: ``batch x n x k x m`` with the batch broadcast over both operands."""
    a, b = _shape(inputs[0]), _shape(inputs[1])
    if len(a) == 1:
        a = [1, a[0]]
    if len(b) == 1:
        b = [b[0], 1]
    if a[-1] != b[-2]:
        raise ValueError(f'matmul of incompatible shapes {a} and {b}')
    return _broadcast_batch(a[:-2], b[:-2]) * a[-2] * a[-1] * b[-1]


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::baddbmm`` / ``aten::addbmm`` (``self, batch1, batch2, ...``): the product ``batch1 @ batch2``."""
    n, c, t = _shape(inputs[1])
    return n * c * t * _shape(inputs[2])[-1]


def mv_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::mv``: ``n x k``."""
    return math.prod(_shape(inputs[0]))


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::scaled_dot_product_attention``: ``q k^T`` and ``A v``, ``batch x L x S x (E + E_v)``."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = math.prod(torch.broadcast_shapes(tuple(q[:-2]), tuple(k[:-2]), tuple(v[:-2])))
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def product_handles() -> Dict[str, Any]:
    """Handles for the matrix products of the blocks, added to (or replacing) mmengine's."""
    return {
        'aten::matmul': matmul_flop_jit,
        'aten::mm': matmul_flop_jit,
        'aten::bmm': matmul_flop_jit,  # also with ``out=`` (a third input)
        'aten::baddbmm': baddbmm_flop_jit,
        'aten::baddbmm_': baddbmm_flop_jit,
        'aten::addbmm': baddbmm_flop_jit,
        'aten::mv': mv_flop_jit,
        'aten::scaled_dot_product_attention': sdpa_flop_jit,
    }


def flop_analyzer(model: nn.Module, inputs: Tuple):
    """mmengine's ``FlopAnalyzer`` on ``model(*inputs)`` with :func:`product_handles`, warnings off."""
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**product_handles())
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


@dataclass
class BlockCost:
    """What one nonlocal block adds.

    Attributes:
        name (str): the module's name in the model.
        type (str): its class.
        params (int): all its parameters.
        conv_weights (int): the weights of its convolutions (the paper's parameter count).
        flops (int): all its counted multiply-accumulates.
        conv_flops (int): those of its convolutions (the paper's FLOP count).
        by_operator (dict): its multiply-accumulates by operator.
    """

    name: str
    type: str
    params: int
    conv_weights: int
    flops: int
    conv_flops: int
    by_operator: Dict[str, int] = field(default_factory=dict)


@dataclass
class ComplexityReport:
    """Parameters and FLOPs of a model and of its nonlocal blocks.

    Attributes:
        params (int): all parameters.
        flops (int): all counted multiply-accumulates.
        by_operator (dict): the model's multiply-accumulates by operator.
        blocks (list[BlockCost]): one entry per nonlocal block.
        input_shape (tuple): the traced input.
        unsupported (dict): operators without a handle and how often they ran.
    """

    params: int
    flops: int
    by_operator: Dict[str, int]
    blocks: List[BlockCost]
    input_shape: Tuple[int, ...]
    unsupported: Dict[str, int] = field(default_factory=dict)

    def added(self, paper_counting: bool = False) -> Tuple[int, int]:
        """``(flops, params)`` of all blocks together: the full count, or the paper's counting (1x1
        convolution MACs and weights)."""
        if paper_counting:
            return (sum(b.conv_flops for b in self.blocks), sum(b.conv_weights for b in self.blocks))
        return sum(b.flops for b in self.blocks), sum(b.params for b in self.blocks)


def analyze(model: nn.Module, inputs: Tuple) -> ComplexityReport:
    """Count parameters and FLOPs of ``model(*inputs)`` and of each nonlocal block in it.

    Args:
        model (nn.Module): the model, in eval mode (its forward is traced once).
        inputs (tuple): the forward arguments.
    """
    from mmengine.analysis import parameter_count

    from snl_mm.blocks import is_nonlocal_block
    analyzer = flop_analyzer(model, inputs)
    params = parameter_count(model)
    by_module = analyzer.by_module()
    by_module_op = analyzer.by_module_and_operator()
    blocks = []
    for name, module in model.named_modules():
        if not is_nonlocal_block(module):
            continue
        if any(name.startswith(b.name + '.') for b in blocks):
            continue  # a block inside a block counts with its parent
        convs = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        ops = dict(by_module_op.get(name, {}))
        blocks.append(
            BlockCost(name=name, type=type(module).__name__, params=params.get(name, 0),
                      conv_weights=sum(m.weight.numel() for m in convs), flops=by_module.get(name, 0),
                      conv_flops=sum(ops.get(op, 0) for op in POINTWISE_OPS), by_operator=ops))
    first = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
    return ComplexityReport(params=params[''], flops=analyzer.total(), by_operator=dict(analyzer.by_operator()),
                            blocks=blocks, input_shape=tuple(getattr(first, 'shape', ())),
                            unsupported=dict(analyzer.unsupported_ops()))


class TensorForward(nn.Module):
    """``model(inputs, mode='tensor')``: the plain forward of an OpenMMLab model, for tracing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, mode='tensor')


def build_model_from_config(config: str, cfg_options: Optional[Dict] = None) -> nn.Module:
    """The model of an OpenMMLab config (its ``default_scope`` and ``custom_imports`` honoured), in eval mode,
    as built (counts do not depend on the weights' values)."""
    return _build(config, cfg_options)[1]


def _build(config: str, cfg_options: Optional[Dict] = None):
    from mmengine.registry import MODELS

    from .inputs import load_config
    cfg = load_config(config, cfg_options)
    return cfg, MODELS.build(cfg.model).eval()


#: the kinds of models :func:`model_input` feeds, by a class in the model's MRO
KINDS = (('Recognizer3D', 'video3d'), ('Recognizer2D', 'video2d'), ('BaseSegmentor', 'segmentor'))


def model_kind(model: nn.Module) -> str:
    """``'video3d'`` (mmaction2's Recognizer3D), ``'video2d'`` (Recognizer2D: TSN, TSM...), ``'segmentor'``
    (mmsegmentation) or ``'image'`` (classifiers and anything else taking ``(B, 3, H, W)``)."""
    names = {cls.__name__ for cls in type(model).__mro__}
    return next((kind for cls, kind in KINDS if cls in names), 'image')


def clip_frames(cfg, model: nn.Module) -> int:
    """Frames of one clip of a video recogniser: its backbone's ``num_segments`` (TSM and kin), else the test
    pipeline's ``SampleFrames`` (``clip_len`` for 3D recognisers, ``clip_len * num_clips`` segments for 2D ones),
    else 8."""
    segments = getattr(getattr(model, 'backbone', None), 'num_segments', None)
    if segments:
        return int(segments)
    for loader in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        for transform in ((cfg.get(loader) or {}).get('dataset') or {}).get('pipeline') or []:
            if transform.get('type') in ('SampleFrames', 'UntrimmedSampleFrames', 'DenseSampleFrames'):
                clip_len = int(transform.get('clip_len', 1))
                return clip_len * int(transform.get('num_clips', 1)) if model_kind(model) == 'video2d' else clip_len
    return 8


def model_input(model: nn.Module, cfg, shape: Optional[Sequence[int]] = None) -> torch.Tensor:
    """One input of the model's kind (:func:`model_kind`) for ``model(inputs, mode='tensor')``.

    Args:
        model (nn.Module): the model.
        cfg: its config (frames of a clip, a segmentor's ``crop_size``).
        shape (sequence[int], optional): ``(H, W)``, or ``(T, H, W)`` for a video recogniser (``T`` frames; 2D
            recognisers: segments). Default: 224 x 224 (a segmentor: the config's ``crop_size``, else 512 x 1024);
            ``T`` from :func:`clip_frames`.

    Returns:
        Tensor: ``(1, 3, H, W)``; a 2D recogniser ``(1, T, 3, H, W)``; a 3D recogniser ``(1, 1, 3, T, H, W)``.
    """
    kind = model_kind(model)
    if shape is not None and (len(shape) not in (2, 3) or min(shape) < 1):
        raise ValueError(f'shape must be (H, W) or (T, H, W), got {tuple(shape)}')
    if shape is not None and len(shape) == 3 and kind not in ('video2d', 'video3d'):
        raise ValueError(f'shape {tuple(shape)} has frames, but the model is a {kind} model: give (H, W)')
    if shape is None:
        shape = tuple(cfg.get('crop_size', (512, 1024))) if kind == 'segmentor' else (224, 224)
    frames, size = (shape[0], tuple(shape[1:])) if len(shape) == 3 else (clip_frames(cfg, model), tuple(shape))
    if kind == 'video3d':
        return torch.randn(1, 1, 3, frames, *size)
    if kind == 'video2d':
        return torch.randn(1, frames, 3, *size)
    return torch.randn(1, 3, *size)


def analyze_config(config: str, shape: Optional[Sequence[int]] = None,
                   cfg_options: Optional[Dict] = None) -> ComplexityReport:
    """:func:`analyze` the model of ``config`` on one input (:func:`model_input`): an image, one clip of a video
    recogniser (2D or 3D), or one image of a segmentor.

    Args:
        config (str): path of the config.
        shape (sequence[int], optional): ``(H, W)``, or ``(T, H, W)`` for video recognisers; see
            :func:`model_input` for the defaults.
        cfg_options (dict, optional): overrides merged into the config.
    """
    cfg, model = _build(config, cfg_options)
    inputs = model_input(model, cfg, shape)
    with torch.no_grad():
        return analyze(TensorForward(model), (inputs, ))


def paper_figure(value: float) -> float:
    """Two decimals as the paper's Table 6 writes them (truncated)."""
    return math.floor(value * 100 + 1e-9) / 100


def format_report(report: ComplexityReport, title: str = '') -> str:
    """Human-readable summary: the model, its blocks (full count and the paper's counting)."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f'input {tuple(report.input_shape)}: {report.flops / 1e9:.3f} GFLOPs (multiply-accumulates), '
                 f'{report.params / 1e6:.3f} M parameters')
    ops = ', '.join(f'{k} {v / 1e9:.3f}' for k, v in sorted(report.by_operator.items(), key=lambda kv: -kv[1]))
    lines.append(f'  by operator (GFLOPs): {ops}')
    if report.unsupported:
        lines.append('  not counted (no handle): ' + ', '.join(sorted(report.unsupported)))
    if not report.blocks:
        lines.append('  no nonlocal block')
        return '\n'.join(lines)
    for b in report.blocks:
        ops = ', '.join(f'{k} {v / 1e9:.4f}' for k, v in sorted(b.by_operator.items(), key=lambda kv: -kv[1]))
        lines.append(f'  {b.type} at {b.name}: +{b.flops / 1e9:.4f} GFLOPs, +{b.params / 1e6:.4f} M parameters '
                     f'(by operator: {ops})')
    flops, params = report.added()
    conv_flops, conv_weights = report.added(paper_counting=True)
    lines.append(f'  blocks, full count: +{flops / 1e9:.4f} GFLOPs, +{params / 1e6:.4f} M parameters '
                 f'(+{100 * flops / max(report.flops - flops, 1):.1f}% FLOPs)')
    lines.append(f'  blocks, paper counting (1x1 convolutions): +{conv_flops / 1e9:.4f} GFLOPs, '
                 f'+{conv_weights / 1e6:.4f} M weights -> Table 6 style +{paper_figure(conv_flops / 1e9):.2f} / '
                 f'+{paper_figure(conv_weights / 1e6):.2f}M')
    return '\n'.join(lines)
