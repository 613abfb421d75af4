"""PromQL's binary operators: arithmetic, comparisons (filters, or 0/1 with `bool`), the set
operators `and` / `or` / `unless`, and vector matching (`on` / `ignoring`, one-to-one and
many-to-one / one-to-many with `group_left` / `group_right`).

Vector matching works on rows: every row of the "many" side meets every row of the "one" side that
has its signature, a step counting where both have a sample; rows that come out with the same
labels are merged, and two samples for one label set at one step is Prometheus' error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import promql_parser as ast

from services.common.errors import InvalidArgument
from services.metrics.domain import METRIC_NAME, LabelSet
from services.metrics.query.promql.values import (
    EvaluationError,
    Scalar,
    Value,
    Vector,
    kind,
    merge_same_labels,
    with_label,
    without_name,
)

if TYPE_CHECKING:
    from services.metrics.query.promql.evaluator import Evaluator

ARITHMETIC: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "%": np.fmod,  # Go's math.Mod: the sign of the dividend
    "^": np.power,
    "atan2": np.arctan2,
}
COMPARISON: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}
SET_OPERATORS = ("and", "or", "unless")
KEEPS_NAME = frozenset({"atan2"})
"""Arithmetic that keeps the metric name (Prometheus drops it for + - * / % ^ only)."""


def apply(op: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The operator on values: a number for arithmetic, 1.0/0.0 for a comparison."""
    with np.errstate(all="ignore"):
        if op in ARITHMETIC:
            return ARITHMETIC[op](np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64))
        return COMPARISON[op](left, right).astype(np.float64)


def negate(operand: Value) -> Value:
    if isinstance(operand, Scalar):
        return Scalar(-operand.values)
    if isinstance(operand, Vector):
        return merge_same_labels(Vector([without_name(lb) for lb in operand.labels], -operand.values, operand.present))
    raise InvalidArgument(
        f"unary expression only allowed on expressions of type scalar or instant vector, got {kind(operand)}"
    )


def binary(ev: Evaluator, node: Any, steps: np.ndarray) -> Value:
    op = str(node.op)
    modifier = node.modifier
    return_bool = bool(modifier and modifier.return_bool)
    lhs, rhs = ev.eval(node.lhs, steps), ev.eval(node.rhs, steps)
    for side in (lhs, rhs):
        if not isinstance(side, Scalar | Vector):
            raise InvalidArgument(
                f"binary expression must contain only scalar and instant vector types, got {kind(side)}"
            )
    if op in SET_OPERATORS:
        if not (isinstance(lhs, Vector) and isinstance(rhs, Vector)):
            raise InvalidArgument(f"set operator {op!r} not allowed in binary scalar expression")
        return _set_operation(op, lhs, rhs, modifier)
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        if op in COMPARISON and not return_bool:
            raise InvalidArgument("comparisons between scalars must use BOOL modifier")
        return Scalar(apply(op, lhs.values, rhs.values))
    if isinstance(lhs, Vector) and isinstance(rhs, Vector):
        return _vector_vector(op, lhs, rhs, modifier, return_bool)
    if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
        vector, left, right = lhs, lhs.values, rhs.values[None, :]
    else:
        assert isinstance(lhs, Scalar) and isinstance(rhs, Vector)
        vector, left, right = rhs, lhs.values[None, :], rhs.values
    results = apply(op, left, right)
    if op in COMPARISON and not return_bool:
        # A filter: the vector's own values where the comparison holds, its labels kept.
        return Vector(vector.labels, vector.values, vector.present & (results == 1.0))
    if op in KEEPS_NAME:
        return Vector(vector.labels, results, vector.present.copy())
    return merge_same_labels(Vector([without_name(lb) for lb in vector.labels], results, vector.present.copy()))


def _signature(modifier: Any) -> Callable[[LabelSet], LabelSet]:
    matching = modifier.matching if modifier is not None else None
    if matching is not None and matching.type == ast.LabelModifierType.Include:
        named = set(matching.labels)
        return lambda labels: tuple(pair for pair in labels if pair[0] in named)
    ignored = {METRIC_NAME, *(matching.labels if matching is not None else ())}
    return lambda labels: tuple(pair for pair in labels if pair[0] not in ignored)


def _any_by_signature(vector: Vector, signature: Callable[[LabelSet], LabelSet]) -> dict[LabelSet, np.ndarray]:
    """Per signature, the steps at which some row with it has a sample."""
    found: dict[LabelSet, np.ndarray] = {}
    for index, labels in enumerate(vector.labels):
        sig = signature(labels)
        seen = found.get(sig)
        found[sig] = vector.present[index].copy() if seen is None else seen | vector.present[index]
    return found


def _set_operation(op: str, lhs: Vector, rhs: Vector, modifier: Any) -> Vector:
    signature = _signature(modifier)
    steps = lhs.values.shape[1]
    never = np.zeros(steps, dtype=bool)
    if op in ("and", "unless"):
        right = _any_by_signature(rhs, signature)
        masks = []
        for index, labels in enumerate(lhs.labels):
            other = right.get(signature(labels), never)
            masks.append(lhs.present[index] & (other if op == "and" else ~other))
        present = np.array(masks) if masks else np.zeros((0, steps), dtype=bool)
        return Vector(lhs.labels, lhs.values, present)
    left = _any_by_signature(lhs, signature)
    extra = [rhs.present[i] & ~left.get(signature(labels), never) for i, labels in enumerate(rhs.labels)]
    if not rhs.labels:
        return lhs
    combined = Vector(
        [*lhs.labels, *rhs.labels],
        np.concatenate([lhs.values, rhs.values]),
        np.concatenate([lhs.present, np.array(extra)]),
    )
    return merge_same_labels(combined)


def _vector_vector(op: str, lhs: Vector, rhs: Vector, modifier: Any, return_bool: bool) -> Vector:
    card = str(modifier.card) if modifier is not None else "OneToOne"
    one_to_one = card.endswith("OneToOne")
    many_is_left = not card.endswith("OneToMany")
    many, one = (lhs, rhs) if many_is_left else (rhs, lhs)
    signature = _signature(modifier)
    matching = modifier.matching if modifier is not None else None
    on = matching is not None and matching.type == ast.LabelModifierType.Include
    matched_labels = set(matching.labels) if matching is not None else set()
    include = list(modifier.group_labels or []) if modifier is not None and not one_to_one else []
    steps = lhs.values.shape[1]

    one_rows: dict[LabelSet, list[int]] = {}
    for index, labels in enumerate(one.labels):
        one_rows.setdefault(signature(labels), []).append(index)
    many_somewhere = many.present.any(axis=0) if len(many.labels) else np.zeros(steps, dtype=bool)
    for sig, members in one_rows.items():
        if len(members) > 1 and np.any((one.present[members].sum(axis=0) > 1) & many_somewhere):
            side = "right" if many_is_left else "left"
            raise EvaluationError(
                f"found duplicate series for the match group {_format(sig)} on the {side} hand-side of the "
                "operation; many-to-many matching not allowed: matching labels must be unique on one side"
            )
    drops_name = (op in ARITHMETIC and op not in KEEPS_NAME) or return_bool
    filters = op in COMPARISON and not return_bool
    labels_out: list[LabelSet] = []
    values_out, present_out = [], []
    matched: dict[LabelSet, np.ndarray] = {}
    for index, labels in enumerate(many.labels):
        sig = signature(labels)
        for other in one_rows.get(sig, ()):
            both = many.present[index] & one.present[other]
            if not both.any():
                continue
            if one_to_one:
                seen = matched.get(sig)
                if seen is not None and np.any(seen & both):
                    raise EvaluationError(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    )
                matched[sig] = both if seen is None else seen | both
            left, right = (
                (many.values[index], one.values[other]) if many_is_left else (one.values[other], many.values[index])
            )
            results = apply(op, left, right)
            if filters:
                values, present = left, both & (results == 1.0)
            else:
                values, present = results, both
            out = without_name(labels) if drops_name else labels
            if one_to_one:
                if on:
                    out = tuple(pair for pair in out if pair[0] in matched_labels)
                else:
                    out = tuple(pair for pair in out if pair[0] not in matched_labels)
            for name in include:
                out = with_label(out, name, dict(one.labels[other]).get(name, ""))
            labels_out.append(out)
            values_out.append(values)
            present_out.append(present)
    if not labels_out:
        return Vector.empty(steps)
    clash = (
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
        if one_to_one
        else "multiple matches for labels: grouping labels must ensure unique matches"
    )
    return merge_same_labels(Vector(labels_out, np.array(values_out), np.array(present_out)), clash)


def _format(labels: LabelSet) -> str:
    return "{" + ", ".join(f'{name}="{value}"' for name, value in labels) + "}"
