"""Pattern pieces that the rule packs share.

Commutative ops appear with their operands in either order. These pieces handle the
order without onnxscript's `commute()`, which multiplies every rule by 2^k:

- `either(op, "Mul", a, b)` matches `Mul(a, b)` and `Mul(b, a)` when `a` or `b` is a
  sub-pattern (a node pattern), so the first alternative fails on the spot when the
  order is wrong and the matcher tries the second.
- When both operands are plain variables, one of them a constant, the pattern binds
  two free variables and the check calls `split_constant` to find which is which.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern as orp

from qrewrite.rewrite.helpers import is_scalar, scalar_value


def either(op, op_type: str, a, b, **kwargs):
    """Return a pattern for `op_type(a, b)` or `op_type(b, a)`."""
    builder = getattr(op, op_type)
    return orp.OrValue([builder(a, b, **kwargs), builder(b, a, **kwargs)])


def split_constant(
    first: ir.Value | None, second: ir.Value | None, expected: float
) -> ir.Value | None:
    """Return the operand that is not the one-element constant `expected`, or None.

    None means that neither operand is such a constant, or that both are.
    """
    first_matches, second_matches = is_scalar(first, expected), is_scalar(second, expected)
    if first_matches and not second_matches and scalar_value(second) is None:
        return second
    if second_matches and not first_matches and scalar_value(first) is None:
        return first
    return None


def is_float(value: ir.Value | None) -> bool:
    """Return whether the value is known to be a float16, bfloat16, float or double tensor."""
    return value is not None and value.dtype in (
        ir.DataType.FLOAT,
        ir.DataType.DOUBLE,
        ir.DataType.FLOAT16,
        ir.DataType.BFLOAT16,
    )
