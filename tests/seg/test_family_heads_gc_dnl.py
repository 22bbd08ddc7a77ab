"""mmsegmentation's GCHead and DNLHead checkpoints load strictly into snl_mm.NonlocalHead (its block as GCBlock /
DNLBlock under the upstream attribute, ``block_name``) and give the same segmentation logits."""
import pytest
import torch
from mmengine.runner import load_checkpoint

from tests.helpers import randomise_, rel_err

HEAD = dict(in_channels=24, channels=32, num_classes=5, in_index=-1, dropout_ratio=0.0,
            norm_cfg=dict(type='BN', requires_grad=True), align_corners=False)

#: upstream head arguments -> the package's block config, per case
CASES = {
    'gc-att-add': ('GCHead', dict(ratio=1 / 4, pooling_type='att', fusion_types=('channel_add', )),
                   'gc_block', dict(type='GCBlock', ratio=1 / 4, pooling_type='att', fusion_types=('channel_add', ))),
    'gc-avg-add-mul': ('GCHead', dict(ratio=1 / 8, pooling_type='avg', fusion_types=('channel_add', 'channel_mul')),
                       'gc_block', dict(type='GCBlock', ratio=1 / 8, pooling_type='avg',
                                        fusion_types=('channel_add', 'channel_mul'))),
    'dnl': ('DNLHead', dict(reduction=2, use_scale=True, mode='embedded_gaussian', temperature=0.05),
            'dnl_block', dict(type='DNLBlock', reduction=2, use_scale=True, mode='embedded_gaussian',
                              temperature=0.05)),
    'dnl-dot_product': ('DNLHead', dict(reduction=2, use_scale=False, mode='dot_product', temperature=0.1),
                        'dnl_block', dict(type='DNLBlock', reduction=2, use_scale=False, mode='dot_product',
                                          temperature=0.1)),
}


@pytest.mark.parametrize('case', list(CASES))
def test_upstream_head_checkpoint_loads_and_gives_the_same_logits(case, mmseg, tmp_path):
    from mmseg.models import decode_heads

    from snl_mm.registry import MODELS
    head_type, upstream_args, block_name, block = CASES[case]
    torch.manual_seed(0)
    upstream = randomise_(getattr(decode_heads, head_type)(**upstream_args, **HEAD), std=0.2).eval()
    path = tmp_path / f'{case}.pth'
    torch.save({'state_dict': upstream.state_dict(), 'meta': {}}, path)
    head = MODELS.build(dict(type='snl_mm.NonlocalHead', block=block, block_name=block_name, **HEAD)).eval()
    assert set(head.state_dict()) == set(upstream.state_dict())
    load_checkpoint(head, str(path), map_location='cpu', strict=True)
    x = [torch.randn(2, 24, 6, 10, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        ref, out = upstream(x), head(x)
    assert rel_err(out, ref) < 1e-5
    fcn_only = {k: v for k, v in head.state_dict().items() if not k.startswith(block_name + '.')}
    assert fcn_only  # the head's own convolutions came from the file as well


def test_block_name_errors(mmseg):
    from snl_mm.registry import MODELS
    with pytest.raises(ValueError, match='block_name must be an identifier'):
        MODELS.build(dict(type='snl_mm.NonlocalHead', block=dict(type='GCBlock'), block_name='gc.block', **HEAD))
    with pytest.raises(ValueError, match="block_name='convs' is an attribute of the head already"):
        MODELS.build(dict(type='snl_mm.NonlocalHead', block=dict(type='GCBlock'), block_name='convs', **HEAD))
