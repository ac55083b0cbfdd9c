"""ConvertSoftmaxToDPUVersion: replace Softmax by the bfloat16 approximation of AMD's DPU.

The DPU computes softmax without subtracting the maximum, with every step in bfloat16
(8 significant bits, round half to even). Writing bf(v) for v rounded to bfloat16 and
taking x = bf(input), the steps are:

    n = floor(bf(x * RCP_LN2))                 RCP_LN2 = bf(1 / ln 2) = 1.4453125
    r = bf(x - bf(n * LN2))                    LN2 = bf(ln 2) = 0.69140625
    p = bf(r * 0.21875 + 0.486328125)          cubic approximation of exp(r) on [0, ln 2)
    p = bf(r * p + 1)
    p = bf(r * p + 1)
    e = bf(bf(2^n) * p)                        e approximates exp(x)
    s = bf(ReduceSum(e, axis, keepdims=1))
    y = bf(e / s)

The polynomial steps compute their Mul and Add in float32 and round once afterwards,
as in the DPU simulation of AMD Quark's ONNX quantizer (SimulateDPUSoftmax in
simulate_dpu.py), which is the source of these steps and constants.

onnxruntime 1.32 has no CPU kernels for bfloat16 Mul, Floor, Pow, ReduceSum or Div, so
the replacement computes in float32 and rounds through Cast(float32 -> bfloat16 ->
float32) where the DPU rounds. That gives the same numbers as bfloat16 arithmetic.
The operands are bfloat16 values, and float32 has 24 >= 2 * 8 + 2 significant bits, so
rounding the float32 result of a Mul, Sub or Div to bfloat16 equals rounding the exact
result once (Figueroa's bound on double rounding). onnxruntime's Cast to bfloat16
rounds half to even, bit for bit like ml_dtypes on 2 million float32 inputs tested.
The quantizer leaves the arithmetic between these roundings float
(qrewrite/quantization/narrow_float.py), as the DPU keeps it in bfloat16.
NOTE: the ReduceSum accumulates in float32 and rounds the total once. How the device
accumulates is not known here, and Quark's bfloat16 ReduceSum leaves it to the runtime.

Error against exact softmax. Without the max subtraction the result depends on the
size of the logits: rounding x to bfloat16 and the rounded ln 2 both shift exp(x) by a
factor that grows with |x|. The largest elementwise error over logits in [-R, R], from
an exhaustive search over pairs of bfloat16 logits (float64 exact softmax, every
float32 input that rounds to each bfloat16 value):

    R      4      8      16     32     48     64     80
    error  0.011  0.019  0.026  0.054  0.110  0.110  0.185

Random rows of 2 to 63 logits in the same ranges stayed below these numbers. The
contract covers logits in [-32, 32]. For a logit above 88.25, 2^n overflows bfloat16,
so that output is NaN and the others of its row are 0. A row whose logits all lie
below about -92.25 gives 0 / 0 = NaN, and below about -87 the values of e are
subnormal and lose precision.

Only opset 13 and later: Cast to bfloat16 needs opset 13. There Softmax normalizes
along the single `axis`, which the ReduceSum reproduces. Before opset 13 Softmax
flattened the input to 2-D at `axis`, and the rule rejects those models.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import int_attribute, static_rank, unique_name

# bf(1 / ln 2) and bf(ln 2), the constants of the DPU's split x = n * ln 2 + r.
RCP_LN2 = 1.4453125
LN2 = 0.69140625
# exp(r) ~ 1 + r * (1 + r * (EXP_C2 + r * EXP_C3)) for r in [0, ln 2).
EXP_C3 = 0.21875
EXP_C2 = 0.486328125

# Softmax-13 normalizes along one axis. Earlier versions flatten to 2-D at `axis`.
_PER_AXIS_SOFTMAX_OPSET = 13
# Logits in [-SOFTMAX_INPUT_BOUND, SOFTMAX_INPUT_BOUND] are what the contract covers.
SOFTMAX_INPUT_BOUND = 32.0
# 0.05344 measured over that range (see the module docstring), rounded up.
SOFTMAX_MAX_ERROR = 0.054


class _SoftmaxToDPU(RewritePattern):
    def __init__(self) -> None:
        super().__init__(name="ConvertSoftmaxToDPUVersion")

    def pattern(self, op, x):
        return op.Softmax(x, _outputs=["softmax_out"])

    def check(self, context, x, softmax_out, **_):  # type: ignore[override]
        if x.dtype != ir.DataType.FLOAT:
            return MatchResult().fail(
                f"the input type is {x.dtype}, and the DPU emulation handles float32 only", x
            )
        axis = int_attribute(softmax_out.producer(), "axis", -1)
        rank = static_rank(x)
        if rank is not None and not -rank <= axis < rank:
            return MatchResult().fail(f"axis {axis} is out of range for rank {rank}", x)
        self._axis = axis
        self._model = context.model
        return MatchResult()

    def _constant(self, op, value: float, base: str):
        tensor = ir.tensor(np.array(value, dtype=np.float32))
        return op.initializer(tensor, name=unique_name(self._model, f"softmax_dpu_{base}"))

    def rewrite(self, op, x, **_):
        def bfloat16(value):
            rounded = op.Cast(value, to=ir.DataType.BFLOAT16)
            return op.Cast(rounded, to=ir.DataType.FLOAT)

        one = self._constant(op, 1.0, "one")
        logits = bfloat16(x)

        # exp(x) = 2^n * exp(r) with n = floor(x / ln 2) and r = x - n * ln 2.
        exponent = op.Floor(bfloat16(op.Mul(logits, self._constant(op, RCP_LN2, "rcp_ln2"))))
        shift = bfloat16(op.Mul(exponent, self._constant(op, LN2, "ln2")))
        remainder = bfloat16(op.Sub(logits, shift))

        # Horner steps of the cubic, each rounded to bfloat16 once.
        poly = op.Mul(remainder, self._constant(op, EXP_C3, "c3"))
        poly = bfloat16(op.Add(poly, self._constant(op, EXP_C2, "c2")))
        poly = bfloat16(op.Add(op.Mul(remainder, poly), one))
        poly = bfloat16(op.Add(op.Mul(remainder, poly), one))

        power = bfloat16(op.Pow(self._constant(op, 2.0, "two"), exponent))
        exp = bfloat16(op.Mul(power, poly))

        axes = op.initializer(
            ir.tensor(np.array([self._axis], dtype=np.int64)),
            name=unique_name(self._model, "softmax_dpu_axes"),
        )
        total = bfloat16(op.ReduceSum(exp, axes, keepdims=1))
        return bfloat16(op.Div(exp, total))


CONVERT_SOFTMAX_TO_DPU_VERSION = Rule(
    name="ConvertSoftmaxToDPUVersion",
    patterns=[_SoftmaxToDPU()],
    matches="Softmax on a float32 tensor (opset 13 and later, where Cast to bfloat16 exists)",
    produces=(
        "the DPU's softmax without max subtraction: exp(x) as 2^n times a cubic in the "
        "remainder, then ReduceSum and Div, each step rounded to bfloat16 through Cast "
        "round trips. The bound holds for logits in [-32, 32]. A logit above 88.25 "
        "overflows and gives NaN"
    ),
    contract=Contract.bounded(atol=SOFTMAX_MAX_ERROR),
    option="ConvertSoftmaxToDPUVersion",
    min_opset=_PER_AXIS_SOFTMAX_OPSET,
)
