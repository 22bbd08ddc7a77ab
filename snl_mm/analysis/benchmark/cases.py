"""What a benchmark case is: a block, an input shape and its settings, and the block built for it."""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Tuple

import torch
import torch.nn as nn

#: implementations a case can compare (``products`` is measured on the block itself).
IMPLEMENTATIONS: Tuple[str, ...] = ('block', 'dense', 'mmcv')
#: ``fp16`` / ``bf16`` run the fp32 modules under ``torch.autocast``, as mixed-precision training does.
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
DEVICES = ('cpu', 'cuda')


@dataclass
class Case:
    """One benchmark case.

    Args:
        block (str): registered block type (``'SNLBlock'``...).
        shape (tuple[int]): input ``(B, C, *S)``.
        cfg (dict): extra block arguments (``path='factored'``...).
    """

    block: str
    shape: Tuple[int, ...]
    cfg: Dict[str, Any] = field(default_factory=dict)

    @property
    def positions(self) -> int:
        return math.prod(self.shape[2:])

    @property
    def name(self) -> str:
        cfg = ','.join(f'{k}={v}' for k, v in sorted(self.cfg.items()))
        return f'{self.block}{"[" + cfg + "]" if cfg else ""} {format_shape(self.shape)}'


def format_shape(shape: Sequence[int]) -> str:
    """``(8, 1024, 14, 14)`` as text."""
    return '(' + ', '.join(str(s) for s in shape) + ')'


def parse_shape(text: str) -> Tuple[int, ...]:
    """``'8,1024,14,14'`` -> ``(8, 1024, 14, 14)``; a shape is ``(B, C, *S)`` with 1 to 3 spatial axes."""
    try:
        shape = tuple(int(s) for s in text.replace('x', ',').split(',') if s.strip())
    except ValueError:
        raise ValueError(f'shape must be comma-separated integers B,C,*S (e.g. 8,1024,14,14), got '
                         f'{text!r}') from None
    if not 3 <= len(shape) <= 5 or min(shape) < 1:
        raise ValueError(f'shape must be B,C,*S with 1 to 3 positive spatial sizes, got {text!r}')
    return shape


def check_settings(device: str, dtype: str) -> None:
    """Raise ``ValueError`` naming the valid choices when ``device`` or ``dtype`` is not one."""
    if device not in DEVICES:
        raise ValueError(f'device must be one of {DEVICES}, got {device!r}')
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {tuple(DTYPES)}, got {dtype!r}')
    if device == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('device "cuda" asked for, but torch sees no CUDA device '
                           f'(torch {torch.__version__}, CUDA build {torch.version.cuda})')


def build_block(case: Case, device: str = 'cpu', seed: int = 0) -> nn.Module:
    """The case's block, in train mode, with its zero-initialised parameters given non-zero values."""
    import snl_mm.blocks  # noqa: F401  (registers the blocks)
    from snl_mm.registry import ROOT_MODELS
    torch.manual_seed(seed)
    block = ROOT_MODELS.build(dict(type=case.block, in_channels=case.shape[1], **case.cfg))
    excite(block, seed)
    return block.to(device).train()


def excite(module: nn.Module, seed: int = 0) -> None:
    """Weights of a block in training rather than at its identity init: convolutions get PyTorch's default
    initialisation (the ``N(0, 0.01)`` projections make every affinity nearly uniform, and the output norm
    then divides float rounding by a near-zero spread), and every all-zero parameter (the output norm's
    weight, ``gamma``...) values in ``[0.5, 1.5)``."""
    torch.manual_seed(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                m.reset_parameters()
        for p in module.parameters():
            if p.numel() and not p.any():
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))


def precision_settings(device: torch.device, dtype: str) -> Dict[str, bool]:
    """Make fp32 on CUDA mean fp32: TF32 off for cuDNN convolutions (on by PyTorch's default) and matrix
    products, so that the block (matrix products) and mmcv (convolutions) are compared in one arithmetic;
    under autocast PyTorch's defaults. Returns the settings in force."""
    if device.type != 'cuda':
        return {}
    torch.backends.cudnn.allow_tf32 = dtype != 'fp32'
    torch.backends.cuda.matmul.allow_tf32 = False
    return dict(cudnn_tf32=torch.backends.cudnn.allow_tf32)
