"""Rules and rule sets as values.

A `Rule` is a named rewrite with a numeric contract. Its matching and replacement are
one or more onnxscript `RewriteRuleClassBase` objects (pattern, check, rewrite), so a
rule author writes those and wraps them in a `Rule`. A `RuleSet` is a sequence of
stages, each an ordered tuple of rules that the engine applies to a fixed point before
the next stage starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import attrs

from qrewrite.rewrite._onnxscript import RewriteRuleClassBase


class RewritePattern(RewriteRuleClassBase):
    """Base class of the pattern objects of a `Rule`: `pattern`, `check` and `rewrite`.

    onnxscript passes every pattern variable to `check` and `rewrite` as a keyword
    argument, so a subclass lists the ones it needs and takes the rest as `**_`. mypy
    reports such a `check` as an incompatible override of onnxscript's declaration,
    hence the `type: ignore[override]` on the built-in rules' `check` methods.
    """


@attrs.frozen
class Contract:
    """Numeric agreement between the outputs of a rewritten model and of the original.

    `exact` rewrites change results only by float rounding, because they reorder or
    fuse arithmetic. `bounded` rewrites stay within `atol + rtol * |reference|`
    elementwise. `conditional` rewrites are exact only when `condition` holds for the
    inputs and may change results arbitrarily otherwise.
    """

    kind: Literal["exact", "bounded", "conditional"]
    rtol: float = 1e-4
    atol: float = 1e-5
    condition: str = ""

    @classmethod
    def exact(cls) -> Contract:
        """Return the contract of a rewrite that changes results only by float rounding."""
        return cls("exact")

    @classmethod
    def bounded(cls, *, atol: float, rtol: float = 0.0) -> Contract:
        """Return the contract of an approximation with the given elementwise error bound."""
        return cls("bounded", rtol=rtol, atol=atol)

    @classmethod
    def conditional(cls, condition: str) -> Contract:
        """Return the contract of a rewrite that is exact only when `condition` holds."""
        return cls("conditional", condition=condition)

    def describe(self) -> str:
        """Return the contract as one sentence for the rule catalogue."""
        if self.kind == "exact":
            return "Exact up to float rounding."
        if self.kind == "bounded":
            return f"Elementwise error at most {self.atol:g} + {self.rtol:g} x |reference|."
        return f"Exact only when {self.condition}; otherwise results change."


def _to_patterns(patterns: Iterable[RewriteRuleClassBase]) -> tuple[RewriteRuleClassBase, ...]:
    return tuple(patterns)


def _check_name(_instance: object, _attribute: object, value: str) -> None:
    if not value or not value.replace("_", "").isalnum():
        raise ValueError(f"invalid rule name {value!r}: use letters, digits and underscores")


@attrs.frozen
class Rule:
    """One named rewrite: what it matches, what it produces, and its contract.

    `patterns` are the onnxscript rule objects that do the matching and the
    replacement. They are tried in order at each node and the first that succeeds wins.
    The engine does not let a rule fire on a model whose ONNX opset is below
    `min_opset` or above `max_opset`, so a rule never emits an op the opset lacks.
    `commute=True` also tries each pattern with the operands of its commutative binary
    ops (Add, Mul, Max, Min, ...) swapped. That multiplies the variants by 2^k for k such
    ops, so keep it for small patterns and spell out the orders of big ones.
    """

    name: str = attrs.field(validator=_check_name)
    patterns: tuple[RewriteRuleClassBase, ...] = attrs.field(converter=_to_patterns)
    matches: str
    produces: str
    contract: Contract = attrs.field(factory=Contract.exact)
    option: str | None = None
    min_opset: int = 1
    max_opset: int = 10_000
    commute: bool = False

    @patterns.validator
    def _check_patterns(self, _attribute: object, value: tuple[RewriteRuleClassBase, ...]) -> None:
        if not value:
            raise ValueError(f"rule {self.name!r} needs at least one pattern")
        for pattern in value:
            if not isinstance(pattern, RewriteRuleClassBase):
                raise TypeError(
                    f"rule {self.name!r}: a pattern must be a RewriteRuleClassBase instance, "
                    f"got {type(pattern).__name__}"
                )


Stage = tuple[Rule, ...]


def _to_stages(stages: Iterable[Iterable[Rule]]) -> tuple[Stage, ...]:
    result = tuple(tuple(stage) for stage in stages)
    return tuple(stage for stage in result if stage)


@attrs.frozen
class RuleSet:
    """Stages of rules. The engine runs each stage to a fixed point before the next.

    Compose sets with `|` (union: one stage with the rules of both, first occurrence of a
    name wins) and `>>` (sequence: the stages of the left set, then those of the right).
    Filter them with `only` and `without`.
    """

    stages: tuple[Stage, ...] = attrs.field(converter=_to_stages, default=())

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule {rule.name!r} appears twice in the rule set")
            seen.add(rule.name)

    @classmethod
    def of(cls, *rules: Rule) -> RuleSet:
        """Return a one-stage set of `rules`, in that order."""
        return cls((rules,))

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule of every stage, in application order."""
        return tuple(rule for stage in self.stages for rule in stage)

    @property
    def names(self) -> tuple[str, ...]:
        """The rule names in application order."""
        return tuple(rule.name for rule in self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(f"no rule named {name!r}; the set contains {', '.join(self.names)}")

    def __or__(self, other: RuleSet) -> RuleSet:
        merged: dict[str, Rule] = {}
        for rule in (*self.rules, *other.rules):
            merged.setdefault(rule.name, rule)
        return RuleSet((tuple(merged.values()),))

    def __rshift__(self, other: RuleSet) -> RuleSet:
        return RuleSet(self.stages + other.stages)

    def filter(self, keep: Callable[[Rule], bool]) -> RuleSet:
        """Return the set with only the rules for which `keep` returns True."""
        return RuleSet(tuple(rule for rule in stage if keep(rule)) for stage in self.stages)

    def only(self, names: Sequence[str]) -> RuleSet:
        """Return the set with only the named rules. Raises KeyError for an unknown name."""
        self._check_known(names)
        return self.filter(lambda rule: rule.name in names)

    def without(self, names: Sequence[str]) -> RuleSet:
        """Return the set without the named rules. Raises KeyError for an unknown name."""
        self._check_known(names)
        return self.filter(lambda rule: rule.name not in names)

    def _check_known(self, names: Sequence[str]) -> None:
        if isinstance(names, str):
            raise TypeError("pass a list of rule names, not one string")
        unknown = [name for name in names if name not in self.names]
        if unknown:
            raise KeyError(f"no rule named {unknown!r}; the set contains {', '.join(self.names)}")

