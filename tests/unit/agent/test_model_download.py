"""Fetching a model sent by reference: streamed from a real HTTP server on loopback, never
past the declared size, checked against the sha256; each failure names the URL, says
whether a later try can help, and leaves no file behind."""

from __future__ import annotations

import hashlib
import socket
import urllib.request
from pathlib import Path

import pytest

from edge_agent.models.download import DownloadError, _RedirectWithoutCredentials, fetch
from tests.support.http_files import serving

MODEL = bytes(range(256)) * 4096  # 1 MiB


def _fetch(url: str, dest: Path, data: bytes = MODEL, **kw: object) -> None:
    args: dict[str, object] = {
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "max_bytes": 8 * len(MODEL),
        "timeout_s": 30.0,
    }
    args.update(kw)
    fetch(url, dest, **args)  # type: ignore[arg-type]


def _error(url: str, dest: Path, **kw: object) -> DownloadError:
    with pytest.raises(DownloadError) as info:
        _fetch(url, dest, **kw)
    assert not dest.exists()  # nothing half-written stays
    return info.value


def test_the_model_arrives_whole_and_a_token_never_goes_over_plain_http(tmp_path: Path) -> None:
    with serving() as http:
        http.routes["/m.onnx"] = (200, MODEL)
        _fetch(f"{http.base_url}/m.onnx", tmp_path / "m", token="s3cret", url_prefix=http.base_url)
    assert (tmp_path / "m").read_bytes() == MODEL
    assert "authorization" not in http.requests[0]  # http: the token stays home


def test_a_url_outside_the_prefix_is_refused(tmp_path: Path) -> None:
    err = _error("http://elsewhere.example/m.onnx", tmp_path / "m", url_prefix="https://models/")
    assert not err.transient
    assert "not under rollout.model_url_prefix" in str(err)


def test_a_redirect_to_another_origin_drops_the_token() -> None:
    handler = _RedirectWithoutCredentials()
    req = urllib.request.Request(
        "https://models.example/blobs/m", headers={"Authorization": "Bearer s3cret"}
    )
    away = handler.redirect_request(req, None, 302, "Found", {}, "https://cdn.example/m")
    assert away is not None
    assert not away.has_header("Authorization")
    home = handler.redirect_request(req, None, 302, "Found", {}, "https://models.example/m2")
    assert home is not None
    assert home.get_header("Authorization") == "Bearer s3cret"


def test_redirects_are_followed(tmp_path: Path) -> None:
    with serving() as http:
        http.routes["/real"] = (200, MODEL)
        http.redirects["/moved"] = f"{http.base_url}/real"
        _fetch(f"{http.base_url}/moved", tmp_path / "m")
    assert (tmp_path / "m").read_bytes() == MODEL


def test_wrong_bytes_and_a_server_that_sends_too_much_are_refused(tmp_path: Path) -> None:
    with serving() as http:
        http.routes["/other"] = (200, MODEL[::-1])
        http.routes["/long"] = (200, MODEL + b"and then some")
        http.routes["/short"] = (200, MODEL[:1000])
        wrong = _error(f"{http.base_url}/other", tmp_path / "m")
        long = _error(f"{http.base_url}/long", tmp_path / "m")
        short = _error(f"{http.base_url}/short", tmp_path / "m")
    assert not wrong.transient
    assert "sha256" in str(wrong)
    assert f"{http.base_url}/other" in str(wrong)
    assert not long.transient
    assert "more than the 1048576 bytes" in str(long)
    assert short.transient  # cut short: may work next time
    assert "1000 bytes arrived" in str(short)


def test_http_errors_say_whether_to_try_again(tmp_path: Path) -> None:
    with serving() as http:
        http.routes["/busy"] = (503, b"busy")
        missing = _error(f"{http.base_url}/gone", tmp_path / "m")
        busy = _error(f"{http.base_url}/busy", tmp_path / "m")
    assert not missing.transient
    assert "HTTP 404" in str(missing)
    assert busy.transient
    assert "HTTP 503" in str(busy)


def test_no_server_is_transient_and_bad_urls_or_sizes_are_not(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    down = _error(f"http://127.0.0.1:{port}/m.onnx", tmp_path / "m")
    assert down.transient
    assert "cannot fetch it" in str(down)
    s3 = _error("s3://bucket/m.onnx", tmp_path / "m")
    assert not s3.transient
    assert "only http(s)" in str(s3)
    huge = _error(f"http://127.0.0.1:{port}/m.onnx", tmp_path / "m", max_bytes=1000)
    assert not huge.transient
    assert "rollout.max_download_bytes" in str(huge)


def test_a_presigned_urls_signature_stays_out_of_the_message(tmp_path: Path) -> None:
    with serving() as http:
        url = f"{http.base_url}/m.onnx?X-Amz-Signature=abcdef"
        err = _error(url, tmp_path / "m")
    assert "X-Amz-Signature" not in str(err)
    assert f"{http.base_url}/m.onnx" in str(err)
