"""Public identifiers: a type prefix and 24 random base62 characters."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24, sep: str = "-") -> str:
    """``<prefix><sep><random>``; ``sep="_"`` where the wire format is OpenAI's (``evt_…``)."""
    return f"{prefix}{sep}" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
