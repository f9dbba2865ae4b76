"""Parse a ``lake_path`` into a local directory or an object-storage location, checking it without I/O.

Only syntax is checked (plus a ``stat`` of existing local folders): nothing is read, created or
connected to. Every rejection is one ``InvalidParameterError`` sentence that names the path without
anything credential-like in it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_shortint.exceptions import InvalidParameterError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
LOCAL_SCHEMES = ("file", "local")


@dataclass(frozen=True)
class LocalLocation:
    """A lake in a local (or POSIX network) directory; ``root`` is absolute and normalised."""

    root: str

    @property
    def uri(self) -> str:
        """``file:///abs/root``: the one URI of this lake (Assets and lineage name it so)."""
        return "file://" + self.root


@dataclass(frozen=True)
class RemoteLocation:
    """A lake under an ObjectStoragePath: ``{protocol}://[conn_id@]{bucket}/{key}``."""

    protocol: str
    conn_id: str | None
    bucket: str
    key: str  # no leading or trailing '/'; may be empty
    path: Any = None  # the ObjectStoragePath the user gave, if any (reused: it holds the connection)

    @property
    def uri(self) -> str:
        """``s3://bucket/key``: the one URI of this lake, printable (no connection id, no credentials)."""
        return (
            f"{self.protocol}://{self.bucket}/{self.key}" if self.key else f"{self.protocol}://{self.bucket}"
        )


Location = LocalLocation | RemoteLocation


def describe(text: str) -> str:
    """The path for an error message, with anything that could be a secret (user:password@) removed."""
    if "://" not in text:
        return repr(text)
    scheme, _, rest = text.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "…@" + netloc.rpartition("@")[2]
    return repr(f"{scheme}://{netloc}{slash}{tail}")


def lake_uri(path: object) -> str:
    """The one URI of the lake at ``path``, however it is spelled: ``/data/lake``, ``/data/lake/``,
    ``file:///data/lake`` and ``file://localhost/data/lake`` all give ``file:///data/lake``;
    ``s3://conn@bucket/key/`` gives ``s3://bucket/key``. Syntax only (it runs when a DAG is parsed):
    a path :func:`parse_location` refuses is refused here with the same message."""
    return parse_location(path, syntax_only=True).uri


def parse_location(path: object, *, syntax_only: bool = False) -> Location:
    """The location of ``path`` (str, os.PathLike or ObjectStoragePath), or ``InvalidParameterError``.

    ``syntax_only`` skips the two checks that look outside the string: whether Airflow has a filesystem
    for the URL's scheme, and whether a local root is (under) a file.
    """
    if isinstance(path, str):
        return _parse_text(path, syntax_only)
    if isinstance(path, bytes) or path is None or isinstance(path, (int, float, bool)):
        raise InvalidParameterError(
            f"lake_path must be an absolute path, file:// URL or object storage URL, not {path!r}"
        )
    from airflow.sdk import ObjectStoragePath

    if isinstance(path, ObjectStoragePath):
        return _parse_object_storage_path(path, syntax_only)
    if isinstance(path, os.PathLike):
        text = os.fspath(path)
        if not isinstance(text, str):
            raise InvalidParameterError("lake_path must be a text path, got a bytes path")
        return _parse_text(text, syntax_only)
    raise InvalidParameterError(
        f"lake_path must be an absolute path, file:// URL or object storage URL, got {type(path).__name__}"
    )


def _parse_object_storage_path(path: ObjectStoragePath, syntax_only: bool) -> Location:
    shown = str(path)
    protocol = (path.protocol or "file").lower()
    if protocol in LOCAL_SCHEMES:
        return _local(str(path.path), shown, syntax_only)
    if not path.bucket:
        raise InvalidParameterError(f"lake_path {describe(shown)} names no bucket or container")
    key = _checked_key(str(path.key), shown)
    return RemoteLocation(protocol, path.conn_id, path.bucket, key, path)


def _parse_text(text: str, syntax_only: bool) -> Location:
    if not text.strip():
        raise InvalidParameterError(
            "lake_path is empty: give an absolute path, a file:// URL or an object storage URL"
        )
    if text != text.strip():
        raise InvalidParameterError(
            f"lake_path {describe(text)} starts or ends with whitespace (a typo would create a "
            "folder of that name): remove it"
        )
    if _CONTROL.search(text):
        raise InvalidParameterError(f"lake_path {describe(text)} contains a control character")
    if "://" not in text:
        return _local(text, text, syntax_only)
    scheme = text.partition("://")[0]
    if not _SCHEME.fullmatch(scheme):
        raise InvalidParameterError(f"lake_path {describe(text)} has a malformed URL scheme")
    scheme = scheme.lower()
    try:
        parts = urlsplit(text)
    except ValueError:
        raise InvalidParameterError(f"lake_path {describe(text)} is not a valid URL") from None
    if scheme in LOCAL_SCHEMES:
        if parts.netloc not in ("", "localhost"):
            raise InvalidParameterError(
                f"lake_path {describe(text)}: a file:// URL must name a local path (file:///abs/path)"
            )
        return _local(unquote(parts.path), text, syntax_only)
    if not syntax_only and not _has_filesystem(scheme):
        raise InvalidParameterError(
            f"lake_path {describe(text)} uses the scheme {scheme!r}, for which Airflow has no filesystem "
            "(install the provider that brings it, or use a local path or s3://conn_id@bucket/prefix)"
        )
    userinfo, at, bucket = parts.netloc.rpartition("@")
    if ":" in userinfo:
        raise InvalidParameterError(
            f"lake_path {describe(text)} carries credentials: put them in an Airflow connection and "
            "name its id before '@' (s3://conn_id@bucket/prefix)"
        )
    if not bucket:
        raise InvalidParameterError(f"lake_path {describe(text)} names no bucket or container")
    if parts.query or parts.fragment:
        raise InvalidParameterError(f"lake_path {describe(text)} must not have a query or fragment")
    conn_id = unquote(userinfo) if at and userinfo else None
    return RemoteLocation(scheme, conn_id, bucket, _checked_key(unquote(parts.path), text))


def _checked_key(key: str, shown: str) -> str:
    """The object key prefix without surrounding '/', refusing '.'/'..' segments and control characters."""
    key = key.strip("/")
    if _CONTROL.search(key):
        raise InvalidParameterError(f"lake_path {describe(shown)} contains a control character")
    if any(segment in (".", "..") for segment in key.split("/")):
        raise InvalidParameterError(
            f"lake_path {describe(shown)} has a '.' or '..' segment, which object stores keep as a "
            "literal key name: give the prefix without it"
        )
    return key


def _has_filesystem(scheme: str) -> bool:
    from airflow.sdk.io import has_fs

    return bool(has_fs(scheme))


def _local(path: str, shown: str, syntax_only: bool) -> LocalLocation:
    if "\x00" in path or _CONTROL.search(path):
        raise InvalidParameterError("lake_path contains a NUL or control character")
    if not os.path.isabs(path):
        raise InvalidParameterError(
            f"lake_path {describe(shown)} is relative: give an absolute path (the working directory "
            "of an Airflow worker is not stable)"
        )
    if ".." in path.split("/"):
        raise InvalidParameterError(
            f"lake_path {describe(shown)} has a '..' segment: give the folder without it"
        )
    root = os.path.normpath(path)
    if not syntax_only:
        _check_folder(root, shown)
    return LocalLocation(root)


def _check_folder(root: str, shown: str) -> None:
    """Refuse a root that is a file, or lies under one (a ``stat`` per level; nothing is created)."""
    current = root
    while True:
        try:
            is_dir = os.path.isdir(current)
            exists = is_dir or os.path.lexists(current)
        except OSError:
            return  # unreadable: the first write reports it
        if exists and not is_dir:
            where = "is an existing file" if current == root else f"lies under {current!r}, a file"
            raise InvalidParameterError(f"lake_path {describe(shown)} {where}: a lake is a folder")
        if exists:
            return
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent
