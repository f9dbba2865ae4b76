"""Text that goes into error messages and logs: one line, bounded length, no registered secret.

The one "truncate for a message" helper (:func:`clip`, :func:`excerpt`, :func:`shown`), the one
secret masker (:func:`register_secret`, :func:`redact`): every provider exception passes its message
through :func:`redact` (see ``exceptions.ShortInterestError``), so a token a server echoes back, or one
the user typed into the wrong field, never reaches an exception, a log line or an XCom; and the one
holder of a secret value (:class:`Secret`), which shows ``***`` wherever an object is printed.
"""

from __future__ import annotations

import hmac
import threading
from typing import Any, NoReturn


class Secret:
    """A secret string (the API token) that shows as ``***`` in ``repr``, ``str``, f-strings, logs and
    ``dataclasses.asdict``; :meth:`reveal` gives the value, where the request header is built.

    Copies are the same object (``asdict`` deep-copies its fields), and pickling is refused: a secret
    never travels inside a pickled object (XCom, trigger kwargs).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The secret itself: for the one place that must send it."""
        return self._value

    def occurs_in(self, text: str) -> bool:
        """True when ``text`` contains the secret (e.g. a server echoing it back), without showing it."""
        return bool(self._value) and self._value in text

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not pickled (it would carry the token in clear)")


_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
MIN_SECRET_LENGTH = 4  # shorter "secrets" would mask ordinary words


def register_secret(secret: str | Secret | None) -> None:
    """Mask ``secret`` in every message the provider builds from now on (in this process)."""
    if isinstance(secret, Secret):
        secret = secret.reveal()
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
