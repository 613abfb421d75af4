"""PromQL text to syntax tree, through `promql-parser` (the Rust parser GreptimeDB uses), behind
limits checked first in one linear pass.

The parser is quadratic in nesting and in the length of an operator chain, and a chain of a few
thousand binary operators crashes it (a segmentation fault, not an exception), so a query is
measured before it is handed over: its size, how deeply its brackets nest and how many operators
it chains. Real dashboards' queries are a few hundred bytes with a handful of operators.
"""

from __future__ import annotations

from typing import Any

import promql_parser as ast

from services.common.errors import InvalidArgument

MAX_QUERY_BYTES = 64 * 1024
MAX_NESTING = 128
"""Deepest nesting of brackets (and chained unary signs) a query may have."""
MAX_OPERATORS = 400
"""Most operators (binary and unary) one query may hold; parsing 400 takes ~30 ms."""

_OPERATOR_CHARS = frozenset("+-*/%^<>=!")
_WORD_OPERATORS = frozenset({"and", "or", "unless", "atan2"})


def measure(expr: str) -> None:
    """Refuses, in time linear in its length, a query too large or too deep for the parser."""
    if len(expr.encode("utf-8", "surrogatepass")) > MAX_QUERY_BYTES:
        raise InvalidArgument(f"invalid parameter 'query': the query is longer than {MAX_QUERY_BYTES // 1024} KiB")
    depth = deepest = operators = signs = 0
    position, length = 0, len(expr)
    while position < length:
        char = expr[position]
        if char in "\"'`":
            position = _string_end(expr, position)
            continue
        if char == "#":
            end = expr.find("\n", position)
            position = length if end < 0 else end
            continue
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth + signs)
        elif char in ")]}":
            depth -= 1
        if char in _OPERATOR_CHARS:
            operators += 1
            # A run of signs ("- - -x") nests like brackets in the tree.
            signs = signs + 1 if char in "+-" else 0
            deepest = max(deepest, depth + signs)
        elif not char.isspace():
            signs = 0
            if char.isalpha():
                end = position
                while end < length and (expr[end].isalnum() or expr[end] == "_"):
                    end += 1
                if expr[position:end].lower() in _WORD_OPERATORS:
                    operators += 1
                position = end
                continue
        position += 1
    if deepest > MAX_NESTING:
        raise InvalidArgument(f"invalid parameter 'query': the expression nests deeper than {MAX_NESTING} levels")
    if operators > MAX_OPERATORS:
        raise InvalidArgument(f"invalid parameter 'query': the expression has more than {MAX_OPERATORS} operators")


def _string_end(expr: str, start: int) -> int:
    quote, position = expr[start], start + 1
    while position < len(expr):
        if expr[position] == "\\" and quote != "`":
            position += 2
            continue
        if expr[position] == quote:
            return position + 1
        position += 1
    return len(expr)


def parse(expr: str) -> Any:
    measure(expr)
    try:
        return ast.parse(expr)
    except ValueError as exc:
        raise InvalidArgument(f"invalid parameter 'query': {exc}") from None


def parse_duration(raw: str, name: str = "duration") -> float:
    try:
        return float(ast.parse_duration(raw).total_seconds())
    except ValueError:
        raise InvalidArgument(f"invalid parameter {name!r}: cannot parse {raw[:80]!r} to a valid duration") from None


def format_query(expr: str) -> str:
    """The expression as Prometheus' /api/v1/format_query gives it: parsed and printed back."""
    return str(parse(expr).prettify())
