"""Regular expressions supplied by users, matched in linear time.

Python's `re` backtracks: `(a+)+b` against thirty `a`s takes seconds, and one such
query froze a service. Every user-supplied pattern is compiled here with RE2
(the engine Prometheus' Go code uses too, so selectors mean the same), after
limits on its size and nesting are checked, and with a bound on the memory RE2
may use for the compiled program. The syntax is RE2's: no backreferences or
lookaround.
"""

from __future__ import annotations

from typing import Any

import re2

from services.common.errors import InvalidArgument

MAX_PATTERN_CHARS = 65_536
"""Long enough for the gateway's own `host=~"h1|h2|…"` over a page of 1,000 hostnames."""
MAX_NESTING = 64
COMPILED_MEMORY_BYTES = 32 << 20

_OPTIONS = re2.Options()
_OPTIONS.max_mem = COMPILED_MEMORY_BYTES
_OPTIONS.log_errors = False


def _nesting(pattern: str) -> int:
    """The deepest group nesting, ignoring escaped characters and character classes."""
    depth = deepest = 0
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def compile_pattern(pattern: str, what: str) -> Any:
    """A compiled RE2 pattern; InvalidArgument naming `what` when it is too large or invalid."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidArgument(
            f"{what}: the regular expression is {len(pattern)} characters long; the limit is {MAX_PATTERN_CHARS}"
        )
    if _nesting(pattern) > MAX_NESTING:
        raise InvalidArgument(f"{what}: the regular expression nests groups more than {MAX_NESTING} deep")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InvalidArgument(f"{what}: invalid regular expression {pattern[:80]!r}: {reason}") from None


_REGEX_SYNTAX = frozenset(".^$*+?{}[]()|\\")


def literal_alternatives(pattern: str) -> list[str] | None:
    """The strings a fully anchored `pattern` matches when it is nothing but literals joined by `|`
    (what `"|".join(re.escape(v) for v in values)` builds, as the gateway's host selector does);
    None for any other pattern. Lets a selector over a page of hostnames be a set lookup."""
    found: list[str] = []
    current: list[str] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\":
            escaped = pattern[position + 1 : position + 2]
            if not escaped or escaped.isalnum() or not escaped.isascii():
                return None  # \d, \x41, \pL ... are classes or escapes, not literals
            current.append(escaped)
            position += 2
            continue
        if char == "|":
            found.append("".join(current))
            current = []
        elif char in _REGEX_SYNTAX:
            return None
        else:
            current.append(char)
        position += 1
    found.append("".join(current))
    return found
