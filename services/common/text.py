"""The one rule for text that reaches a store: PostgreSQL text cannot hold NUL characters (and
SQLite would store what PostgreSQL refuses), so such text is refused at the edge on both."""

from __future__ import annotations


def holds_nul(text: str) -> bool:
    return "\x00" in text


NUL_RULE = "contains a NUL character (\\x00), which text may not hold"
