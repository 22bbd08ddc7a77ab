# The nonlocal blocks of the paper's tables, written once; the block configs of every task take theirs from here
# (`_base_.nonlocal_blocks.snl`) and put it where the task's baseline says (`_base_.placement`).
#
# The paper's rows come from its code (zh460045050/SNL_ICCV2021, SNL-Classification/model/nls/), so each block
# here is the one that code builds, in Cs = C / 2 (`--div 2`), where the package can express it:
nonlocal_blocks = dict(
    # NL: softmax(theta phi^T) Z W. The code's `Stage` computes the softmax without the 1 / sqrt(Cs) of Wang et al.
    nl=dict(type='NLBlock', reduction=2, use_scale=False),
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
)
