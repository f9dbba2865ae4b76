"""The byte cap on one HTTP response, after decompression: a gzip bomb stops at the cap.

:func:`read_body` reads a response's body as sent (the session does not decompress it) with a cap on
the wire, then decodes ``Content-Encoding`` itself with the same cap, so that no more than ``limit + 1``
bytes are ever held, however much a body would inflate to. The time bound is the request's own total
timeout (``transports.rest.client``).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

CHUNK = 64 * 1024


class ResponseTooLarge(Exception):
    """The body (on the wire or decompressed) is larger than the cap."""


class BadEncoding(Exception):
    """The body does not decode as its ``Content-Encoding`` says."""


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of ``response``, decoded per ``Content-Encoding``, at most ``limit`` bytes.

    Raises :class:`ResponseTooLarge` past the cap (announced, on the wire or decompressed),
    :class:`BadEncoding` for an unknown or corrupt encoding; read errors and timeouts propagate as
    aiohttp raises them.
    """
    declared = response.content_length
    if declared is not None and declared > limit:
        raise ResponseTooLarge(f"it announces {declared:,} bytes")
    parts: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(CHUNK):
        total += len(chunk)
        if total > limit:
            raise ResponseTooLarge(f"more than {limit:,} bytes arrived")
        parts.append(chunk)
    return decode(b"".join(parts), response.headers.get("Content-Encoding", ""), limit)


def decode(body: bytes, content_encoding: str, limit: int) -> bytes:
    """``body`` decoded per a ``Content-Encoding`` header (encodings applied in order), at most ``limit``
    bytes after each step."""
    encodings = [e.strip().lower() for e in content_encoding.split(",")]
    for encoding in reversed([e for e in encodings if e and e != "identity"]):
        body = _decode(body, encoding, limit)
    return body


def _decode(data: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return _inflate(data, 16 + zlib.MAX_WBITS, limit)
    if encoding == "deflate":  # zlib-wrapped as the RFC says, or raw deflate as some servers send
        try:
            return _inflate(data, zlib.MAX_WBITS, limit)
        except BadEncoding:
            return _inflate(data, -zlib.MAX_WBITS, limit)
    raise BadEncoding(f"unsupported Content-Encoding {encoding[:40]!r}")


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Decompress ``data`` (all its gzip members) without ever holding more than ``limit + 1`` bytes."""
    out = bytearray()
    try:
        while data:
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(data, limit + 1 - len(out))
            if len(out) > limit or inflater.unconsumed_tail:
                raise ResponseTooLarge(f"it inflates to more than {limit:,} bytes")
            out += inflater.flush()
            if not inflater.eof:
                raise BadEncoding("the compressed body is truncated")
            data = inflater.unused_data
    except zlib.error as err:
        raise BadEncoding(f"the body is not valid {'gzip' if wbits > 16 else 'deflate'} ({err})") from None
    if len(out) > limit:
        raise ResponseTooLarge(f"it inflates to more than {limit:,} bytes")
    return bytes(out)
