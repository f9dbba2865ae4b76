"""Text that goes into error messages and logs: one line, bounded length."""

from __future__ import annotations


def clip(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters (server-provided messages stay readable)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def excerpt(body: bytes, limit: int = 120) -> str:
    """The start of a response body for an error message, on one line."""
    return clip(body[: limit * 4].decode("utf-8", errors="replace"), limit)
