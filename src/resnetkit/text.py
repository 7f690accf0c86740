"""Words for messages: counts with their nouns, the first few of a list of names, and what a
value of a type is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_origin


def plural(count: int, word: str) -> str:
    """``1 iteration``, ``2 iterations``, ``64,000 iterations``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def first_few(names: Sequence[str], most: int) -> str:
    """The first ``most`` names, comma-separated (", ..." when there are more)."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def what_it_takes(kind: object) -> str:
    """A value of type ``kind`` in words (``int`` means little to a student who typed 0.1):
    ``true or false``, ``a whole number``, ``a number``, ``whole numbers separated by commas``
    (a tuple), else ``text``."""
    if kind is bool:
        return "true or false"
    if kind is int:
        return "a whole number"
    if kind is float:
        return "a number"
    if kind is tuple or get_origin(kind) is tuple:
        return "whole numbers separated by commas"
    return "text"
