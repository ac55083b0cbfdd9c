"""Pure edits of a Selection: drop the quantization of tensors, or change their spec.

Planner rules use these to refine what `select` chose. Every edit returns a new
Selection and keeps it consistent: uses, producer outputs, share groups and bias links
never point at a dropped target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from qrewrite.config import QTensorConfig
from qrewrite.quantization.selection import Role, Selection, Target


def drop_tensors(selection: Selection, reasons: Mapping[str, str]) -> Selection:
    """Return the selection without any activation target on the tensors in `reasons`.

    Each dropped tensor is recorded in `kept_float` with its reason. A bias whose input
    scale came from a dropped target stays float too.
    """
    dropped = {
        key
        for key, target in selection.targets.items()
        if target.role is Role.ACTIVATION and target.tensor in reasons
    }
    if not dropped:
        return selection

    links = tuple(link for link in selection.bias_links if link.activation_key not in dropped)
    orphan_biases = {link.bias_key for link in selection.bias_links} - {
        link.bias_key for link in links
    }
    removed = dropped | orphan_biases

    groups = []
    for group in selection.share_groups:
        kept = tuple(key for key in group if key not in removed)
        if len(kept) > 1:
            groups.append(kept)

    kept_float = dict(selection.kept_float)
    for tensor, reason in reasons.items():
        kept_float.setdefault(tensor, reason)

    return attrs.evolve(
        selection,
        targets={k: t for k, t in selection.targets.items() if k not in removed},
        input_uses={use: k for use, k in selection.input_uses.items() if k not in removed},
        output_targets={t: k for t, k in selection.output_targets.items() if k not in removed},
        share_groups=tuple(groups),
        bias_links=links,
        kept_float=kept_float,
    )


def change_specs(
    selection: Selection, change: Callable[[Target], QTensorConfig | None]
) -> Selection:
    """Return the selection with each target's spec replaced by `change(target)`.

    `change` returns None to keep a target's spec.
    """
    targets = {}
    for key, target in selection.targets.items():
        spec = change(target)
        targets[key] = target if spec is None else attrs.evolve(target, spec=spec)
    return attrs.evolve(selection, targets=targets)
