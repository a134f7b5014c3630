"""Pydantic models of the wire format, in OpenAI's exact shapes (plus additive extensions)."""
