"""Configs of the weight algorithms that `QConfig.algo_config` lists.

CLEConfig (qrewrite/algorithms/cle.py) and HQQConfig (4-bit MatMulNBits weights, see
qrewrite/quantization/matmul_nbits.py) are built. For the others, `QConfig` raises
`NotBuiltError` naming the class when `algo_config` contains one. Those classes exist so
that configs written for the full option surface import and validate their fields.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class AlgoConfig:
    """Base class of the algorithm configs."""


@attrs.frozen
class CLEConfig(AlgoConfig):
    """Cross-layer equalization: rescale consecutive layers' channels to even out weights.

    `cle_steps` is the number of sweeps over all layer pairs. With
    `cle_scale_append_bias`, the first layer's bias counts toward its channel ranges, so
    a channel's bias is never scaled above the balanced weight range.
    """

    cle_steps: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    cle_scale_append_bias: bool = True


@attrs.frozen
class AdaRoundConfig(AlgoConfig):
    """Learn per-weight rounding directions that minimize each layer's output error."""

    learning_rate: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    num_iterations: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=1, validator=attrs.validators.ge(1))


@attrs.frozen
class AdaQuantConfig(AlgoConfig):
    """Fine-tune weights and biases layer by layer against the float outputs."""

    learning_rate: float = attrs.field(default=1e-5, validator=attrs.validators.gt(0))
    num_iterations: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=1, validator=attrs.validators.ge(1))


@attrs.frozen
class GPTQConfig(AlgoConfig):
    """Second-order weight rounding (GPTQ) for MatMul weights."""

    block_size: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    percdamp: float = attrs.field(default=0.01, validator=attrs.validators.gt(0))


@attrs.frozen
class HQQConfig(AlgoConfig):
    """Half-quadratic quantization of MatMul weights, without calibration data.

    QConfig turns it into UseMatMulNBits with MatMulNBitsParams Algorithm "HQQ" and this
    group size; only bits=4 is built, because MatMulNBits runs 4-bit weights.
    """

    group_size: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    bits: int = attrs.field(default=4, validator=attrs.validators.in_((2, 3, 4, 8)))
