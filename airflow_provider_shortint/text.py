"""Text that goes into error messages and logs: one line, bounded length, no registered secret.

The one "truncate for a message" helper (:func:`clip`, :func:`excerpt`, :func:`shown`) and the one
secret masker (:func:`register_secret`, :func:`redact`): every provider exception passes its message
through :func:`redact` (see ``exceptions.ShortInterestError``), so a token a server echoes back, or one
the user typed into the wrong field, never reaches an exception, a log line or an XCom.
"""

from __future__ import annotations

import threading

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
MIN_SECRET_LENGTH = 4  # shorter "secrets" would mask ordinary words


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` in every message the provider builds from now on (in this process)."""
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        with _SECRETS_LOCK:
            _SECRETS.add(secret)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    if not _SECRETS:
        return text
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def clip(text: str, limit: int = 300) -> str:
    """``text`` on one line, secrets masked, cut to ``limit`` characters (server messages stay readable).

    Masking comes before cutting, so a cut never leaves half a token behind.
    """
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def excerpt(body: bytes, limit: int = 120) -> str:
    """The start of a response body for an error message, on one line."""
    return clip(body[: limit * 4].decode("utf-8", errors="replace"), limit)


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters (a user's symbol, a server's value)."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4300 digits has no repr
        text = f"<{type(value).__name__} too large to show>"
    return clip(text, limit)
