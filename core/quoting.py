"""Customer strings inside messages: quoted, and cut to :data:`QUOTE_CHARS` characters, so an
error (answered, logged or stored) never carries a customer's megabyte back."""

from __future__ import annotations

QUOTE_CHARS = 200


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` itself when at most ``limit`` characters, else its start and its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def quoted(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` of a string (another value's ``repr`` likewise), cut as :func:`clip` cuts."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    return clip(repr(value), limit)
