"""Fetch a model that a rollout sends by reference (``ModelUpdate.url``) rather than inline.

Models too large for the models topic travel as a URL into the centre's blob store (an S3
bucket behind HTTPS, or the local store's root behind any web server; ``docs/loop.md``). The
update's signature covers the sha256 and the size, not the URL, so what is fetched is trusted
only once both match: :func:`fetch` streams the body to a temporary file, never past the
declared size, hashing as it goes, and fsyncs it; the caller renames it into place.

Errors name the URL and what to do, and say whether trying again later can help
(:attr:`DownloadError.transient`: the server is down, slow or overloaded) or not (the object is
missing, the bytes are wrong, the model is larger than this vehicle takes).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DownloadError", "DownloadSettings", "fetch"]

_CHUNK = 1 << 20
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class DownloadSettings:
    """How this vehicle fetches models by reference (``[rollout]`` of the agent)."""

    max_bytes: int = 2 * 1024**3
    timeout_s: float = 600.0
    token: str | None = None  # sent as ``Authorization: Bearer``, only under url_prefix
    url_prefix: str = ""  # models are fetched only from under it; empty: any http(s) URL


class DownloadError(Exception):
    """The model at a URL could not be fetched; ``transient``: worth trying again later."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _redact(url: str) -> str:
    """The URL without its query (a presigned URL's signature) or user info."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class _RedirectWithoutCredentials(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry the Authorization header to another origin."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]
        if new is not None and _origin(newurl) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.rpartition("@")[2]


_OPENER = urllib.request.build_opener(_RedirectWithoutCredentials)


def fetch(
    url: str,
    dest: Path,
    *,
    size_bytes: int,
    sha256: str,
    max_bytes: int,
    timeout_s: float,
    token: str | None = None,
    url_prefix: str = "",
) -> None:
    """Write the ``size_bytes`` bytes at ``url`` whose sha256 is ``sha256`` to ``dest``.

    With ``url_prefix``, a URL outside it is refused (the URL is not covered by the update's
    signature: this is what keeps a forged update from pointing the fleet elsewhere), and
    ``token`` is sent only to it, over https, and dropped on a redirect to another origin.

    ``dest`` is removed on any failure. ``OSError`` (the disk) passes through unchanged, so the
    caller can tell a full disk from a bad download; everything else is :class:`DownloadError`.
    """
    shown = _redact(url)
    if url_prefix and not url.startswith(url_prefix):
        raise DownloadError(
            f"model url {shown} is not under rollout.model_url_prefix ({_redact(url_prefix)}): "
            "refused; publish it there, or change the prefix",
            transient=False,
        )
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(
            f"model url {shown}: only http(s) is fetched, not {scheme or 'a bare path'!r}; "
            "set [rollout] model_base_url at the centre to an http(s) address",
            transient=False,
        )
    if size_bytes > max_bytes:
        raise DownloadError(
            f"model at {shown} is {size_bytes} bytes, above rollout.max_download_bytes "
            f"({max_bytes}): raise it if this vehicle should run the model",
            transient=False,
        )
    headers = {"Accept": "application/octet-stream"}
    if token and url_prefix.startswith("https://") and url.startswith(url_prefix):
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    deadline = time.monotonic() + timeout_s
    digest = hashlib.sha256()
    got = 0
    try:
        with _OPENER.open(request, timeout=timeout_s) as resp, dest.open("wb") as out:
            while True:
                if time.monotonic() > deadline:
                    raise DownloadError(
                        f"model at {shown}: {got} of {size_bytes} bytes after {timeout_s:.0f} s "
                        "(rollout.download_timeout_s); tried again later",
                        transient=True,
                    )
                block = resp.read(min(_CHUNK, size_bytes + 1 - got))
                if not block:
                    break
                got += len(block)
                if got > size_bytes:
                    raise DownloadError(
                        f"model at {shown}: the server sends more than the {size_bytes} bytes "
                        "the update declares; refused",
                        transient=False,
                    )
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response and its socket
        dest.unlink(missing_ok=True)
        transient = exc.code in _TRANSIENT_STATUS
        then = "tried again later" if transient else "refused: publish the model again"
        raise DownloadError(
            f"model at {shown}: HTTP {exc.code} {exc.reason}; {then}", transient=transient
        ) from exc
    except (
        urllib.error.URLError,
        http.client.HTTPException,
        ssl.SSLError,  # an OSError, but the network's, not the disk's
        TimeoutError,
        ConnectionError,
    ) as exc:
        dest.unlink(missing_ok=True)
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DownloadError(
            f"model at {shown}: cannot fetch it ({why}); tried again later", transient=True
        ) from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if got != size_bytes:
        dest.unlink(missing_ok=True)
        raise DownloadError(
            f"model at {shown}: {got} bytes arrived, the update declares {size_bytes} (cut "
            "short); tried again later",
            transient=True,
        )
    if digest.hexdigest() != sha256:
        dest.unlink(missing_ok=True)
        raise DownloadError(
            f"model at {shown}: sha256 {digest.hexdigest()[:12]} != {sha256[:12]}: not the model "
            "the update names; refused",
            transient=False,
        )
