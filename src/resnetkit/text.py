"""Words for messages: counts with their nouns, and the first few of a list of names."""

from __future__ import annotations

from collections.abc import Sequence


def plural(count: int, word: str) -> str:
    """``1 iteration``, ``2 iterations``, ``64,000 iterations``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def first_few(names: Sequence[str], most: int) -> str:
    """The first ``most`` names, comma-separated (", ..." when there are more)."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")
