"""Int16Scale: replace every float scale by the nearest M / 2^N with 16-bit M and N.

Some accelerators store a scale as an integer multiplier M (int16, so 1 <= M <= 32767)
and a right shift N (uint16, so 0 <= N <= 65535). For a scale s the largest N with
round(s * 2^N) <= 32767 gives the closest such value, M = round(s * 2^N); its relative
error is at most 1 / (2 * 16384), about 3.1e-5, because then M >= 16384. Zero points stay
as they are, so the represented range moves by the same relative amount.

Activation and weight scales are snapped before the bias is refined, so a bias scale
is still the product of its input and weight scales. A scale above 32767 has no such
form and is left as it is, with a warning.
"""

from __future__ import annotations

import logging

import attrs
import numpy as np

from qrewrite.quantization.plan import Plan
from qrewrite.quantization.qparams import MAX_INT16_MULTIPLIER, QuantParams, int16_form

logger = logging.getLogger(__name__)


def snap_to_int16_form(scales: np.ndarray) -> np.ndarray:
    """Return each scale as the nearest M / 2^N with 1 <= M <= 32767 and 0 <= N <= 65535."""
    return int16_form(scales)


def snap_plan_scales(plan: Plan) -> Plan:
    """Return `plan` with every activation and weight scale in M / 2^N form."""
    updates: dict[str, QuantParams] = {}
    for key, params in plan.params.items():
        snapped = snap_to_int16_form(params.scale)
        if np.any(np.asarray(params.scale) > MAX_INT16_MULTIPLIER):
            logger.warning("Int16Scale: a scale of %r is above 32767 and stays as it is", key)
        if not np.array_equal(snapped, params.scale):
            updates[key] = attrs.evolve(params, scale=snapped)
    logger.info("Int16Scale: snapped %d of %d scales", len(updates), len(plan.params))
    return plan.with_params(updates)
