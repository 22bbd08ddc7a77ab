# The nonlocal blocks of the paper's tables, written once; the block configs of every task take theirs from here
# (`_base_.nonlocal_blocks.snl`) and put it where the task's baseline says (`_base_.placement`).
#
# The paper's rows come from its code (zh460045050/SNL_ICCV2021, SNL-Classification/model/nls/), so each block
# here is the one that code builds, in Cs = C / 2 (`--div 2`), where the package can express it:
nonlocal_blocks = dict(
    # NL: softmax(theta phi^T) Z W. The code's `Stage` computes the softmax without the 1 / sqrt(Cs) of Wang et al.,
    # and none of its 1x1 convolutions has a bias (model/nls/basic.py:25-26, nl.py:16-18)
    nl=dict(type='NLBlock', reduction=2, use_scale=False, bias=False),
    # NS: the code's `NSUnit` computes (Z - A Z) W with one W, unscaled softmax, no biases (the sign of W is learnt)
    ns=dict(type='NSBlock', reduction=2, bias=False),
    # A2, "the spectral paper's A2 baseline": the code's `a2` unit is not the double-attention block of Chen et al.
    # but `att = relu(theta) relu(phi)^T`, unnormalised, unsymmetrised, then A Z W (`Stage.DotKernel`, `NLUnit`)
    a2=dict(
        type='GraphNonlocalBlock',
        reduction=2,
        affinity=dict(kernel='relu_dot', symmetrize=False, normalize='none'),
        graph_filter=dict(order=2, terms=(1, ))),
    # CGNL: the code's `SpatialCGNLx`, the Gaussian RBF kernel by its Taylor expansion of order 2, one group
    cgnl=dict(type='CGNLBlock', reduction=2, groups=1, kernel='gaussian', order=2),
    # SNL: Eq. 5 (the code's `--nl-type snl --is_sys --is_norm`)
    snl=dict(type='SNLBlock', reduction=2),
    # CC: not in the paper's tables; criss-cross attention with CCNet's R = 2
    cc=dict(type='CCBlock', recurrence=2),
    # variants kept by the package, never the paper's rows:
    # the double-attention block of Chen et al. 2018 (A^2-Nets), what "A2" means outside the spectral paper
    a2_double_attention=dict(type='A2Block', reduction=2),
    # CGNL with the dot-product kernel, one group
    cgnl_dot=dict(type='CGNLBlock', reduction=2, groups=1, kernel='dot'),
    # the CGNL paper's "R-50 w/ 1 CGNLx block" (kaiyuyue/cgnl-network.pytorch): Gaussian, order 3, 8 groups
    cgnlx_g8=dict(type='CGNLBlock', reduction=2, groups=8, kernel='gaussian', order=3),
    # the rest of the family, at its authors' settings (none is a row of the paper's tables):
    # GCNet (Cao et al. 2019): attention pooling, a bottleneck of C / 16 with LayerNorm, channel_add (its backbone's)
    gc=dict(type='GCBlock', ratio=1 / 16, pooling_type='att', fusion_types=('channel_add', )),
    # SE (Hu et al. 2018): GCNet's average-pooling, channel_mul point without LayerNorm, reduction 16
    se=dict(type='GCBlock', ratio=1 / 16, pooling_type='avg', fusion_types=('channel_mul', ), norm_cfg=None),
    # DNL (Yin et al. 2020, mmsegmentation's DNLHead): whitened embedded Gaussian, 1 / sqrt(Cs), temperature 0.05,
    # plus the unary term, Cs = C / 2
    dnl=dict(type='DNLBlock', reduction=2, use_scale=True, temperature=0.05),
    # linear (efficient) attention (Shen et al. 2021), Cs = C / 2, one head
    linear_attention=dict(type='LinearAttentionBlock', reduction=2, heads=1),
    # DANet (Fu et al. 2019, mmsegmentation's DAHead): position attention with C / 8 queries and keys, unscaled;
    # channel attention on the C x C channel graph
    pam=dict(type='PAMBlock', reduction=8),
    cam=dict(type='CAMBlock'),
    # EMANet (Li et al. 2019, mmsegmentation's EMAHead): 64 bases, 3 EM iterations, momentum 0.1, as an inserted
    # residual block (the identity at init; the head's form is fusion='residual_relu')
    ema=dict(type='EMABlock', num_bases=64, num_stages=3, momentum=0.1),
)

# How the released PreResNet (model/preresnet_snl.py) starts its blocks: it has no initialisation loop, so a block's
# norm starts at PyTorch's weight 1, not at the identity of Eq. 5, and the NL, NS, A2 and SNL units end with a ReLU
# after that norm (model/nls/nl.py:35-37, ns.py:40-44, snl.py:42-46; CGNL ends with its GroupNorm, cgnl.py:128-129).
# The PreResNet rows merge these into their block: dict(nonlocal_blocks.snl, **released_preresnet_unit).
released_preresnet_init = dict(init_cfg=dict(type='Constant', val=1, bias=0, layer=['_BatchNorm', 'GroupNorm']))
released_preresnet_unit = dict(released_preresnet_init, act_cfg=dict(type='ReLU'))
