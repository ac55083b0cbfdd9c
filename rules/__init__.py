"""Built-in rule packs, installed as `qrewrite.rules`.

Each module contains one family of rules. `builtin_rules()` returns every built-in rule in
application order, with default parameters, and docs/rules.md is generated from it.
`float_graph_rules(options)` selects the rules that a set of extra options turns on.
"""

from __future__ import annotations

from typing import Any

from qrewrite.rules.activations import CONVERT_CLIP_TO_RELU, FUSE_GELU, REPLACE_CLIP6_RELU
from qrewrite.rules.affine import FOLD_CONV_AFFINE
from qrewrite.rules.batchnorm import CONVERT_BN_TO_CONV, FOLD_BATCH_NORM
from qrewrite.rules.dpu import DPU_RULES
from qrewrite.rules.hardswish import FUSE_HARD_SWISH
from qrewrite.rules.initializers import copy_bias_init_rule, copy_shared_init_rule
from qrewrite.rules.normalization import FUSE_INSTANCE_NORM, FUSE_L2_NORM, FUSE_LAYER_NORM
from qrewrite.rules.pooling import CONVERT_REDUCE_MEAN_TO_GLOBAL_AVG_POOL, SPLIT_LARGE_KERNEL_POOL
from qrewrite.rules.split import CONVERT_SPLIT_TO_SLICE

from qrewrite.rewrite import RuleSet

__all__ = ["builtin_rules", "float_graph_rules"]

# Fusions run before conversions: ConvertReduceMeanToGlobalAvgPool would otherwise take
# the ReduceMean nodes of a decomposed instance normalization, and ConvertBNToConv the
# BatchNormalization nodes that FoldBatchNorm can remove.
_FUSIONS = (FUSE_GELU, FUSE_HARD_SWISH, FUSE_LAYER_NORM, FUSE_INSTANCE_NORM, FUSE_L2_NORM)
_CONVERSIONS = (
    CONVERT_CLIP_TO_RELU,
    REPLACE_CLIP6_RELU,
    CONVERT_REDUCE_MEAN_TO_GLOBAL_AVG_POOL,
    CONVERT_SPLIT_TO_SLICE,
)


def _stages(
    copies: tuple[Any, ...],
    fold: tuple[Any, ...],
    to_conv: tuple[Any, ...],
    fusions: tuple[Any, ...],
    conversions: tuple[Any, ...],
    split_pool: tuple[Any, ...],
    dpu: tuple[Any, ...],
) -> RuleSet:
    # Copies come first, so BatchNorm folding never meets a shared weight.
    # FoldBatchNorm and FoldConvAffine share a stage, so Conv -> Mul -> BatchNormalization
    # folds completely: once the Mul has folded, the BatchNormalization follows a Conv.
    # SplitLargeKernelPool runs after ReduceMean has become GlobalAveragePool.
    # The DPU rules run last: the device computes each pool of a split chain with that
    # pool's own multiplier, so ConvertAvgPoolToDPUVersion must see the split pools. Run
    # before the split, it would scale the large pool once and the split would keep
    # that one Mul. Running after the conversions also lets spatial ReduceMeans reach it
    # as GlobalAveragePool, which uses the pooling constants.
    return RuleSet([copies, fusions, fold, to_conv, conversions, split_pool, dpu])


def builtin_rules() -> RuleSet:
    """Return every built-in rule with default parameters, in application order."""
    return _stages(
        (copy_shared_init_rule([]), copy_bias_init_rule([])),
        (FOLD_BATCH_NORM, FOLD_CONV_AFFINE),
        (CONVERT_BN_TO_CONV,),
        _FUSIONS,
        _CONVERSIONS,
        (SPLIT_LARGE_KERNEL_POOL,),
        DPU_RULES,
    )


def float_graph_rules(options: Any) -> RuleSet:
    """Return the float-graph rules that `options` (a `qrewrite.config.ExtraOptions`) selects.

    Each rule runs when its option is True. CopySharedInit and CopyBiasInit run when
    their op type list is not None. The DPU simulation rules also need enable_npu_cnn
    and SimulateDPU. OptimizeModel False drops every rule except the DPU simulation,
    which describes the target device rather than optimizing the graph.
    """
    dpu = (
        tuple(rule for rule in DPU_RULES if getattr(options, rule.option))
        if options.enable_npu_cnn and options.SimulateDPU
        else ()
    )
    if not options.OptimizeModel:
        return _stages((), (), (), (), (), (), dpu)

    copies = []
    if options.CopySharedInit is not None:
        copies.append(copy_shared_init_rule(list(options.CopySharedInit)))
    if options.CopyBiasInit is not None:
        copies.append(copy_bias_init_rule(list(options.CopyBiasInit)))

    def enabled(rules: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(rule for rule in rules if getattr(options, rule.option))

    return _stages(
        tuple(copies),
        enabled((FOLD_BATCH_NORM, FOLD_CONV_AFFINE)),
        enabled((CONVERT_BN_TO_CONV,)),
        enabled(_FUSIONS),
        enabled(_CONVERSIONS),
        enabled((SPLIT_LARGE_KERNEL_POOL,)),
        dpu,
    )
