"""The labeling API's interactive docs render in a real browser with no internet.

A real uvicorn server, and headless Chromium (Debian package ``chromium``) with every
host but loopback made unresolvable: if ``/docs`` or ``/redoc`` needed a CDN, the page would
stay blank whether or not this machine has internet.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest_service.api import ApiServer, create_app
from ingest_service.blobstore import LocalBlobStore
from ingest_service.queue import LabelQueue

pytestmark = pytest.mark.integration

ROUTES = {
    "/v1/tasks/claim",
    "/v1/tasks/{task_id}",
    "/v1/tasks/{task_id}/cameras/{name}",
    "/v1/tasks/{task_id}/lidar",
    "/v1/tasks/{task_id}/labels",
    "/v1/tasks/{task_id}/skip",
    "/v1/queue/stats",
    "/v1/export/coco",
    "/v1/export/kitti",
    "/v1/export/cvat",
    "/v1/export/labelstudio",
    "/v1/import/cvat",
    "/v1/import/labelstudio",
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    with LabelQueue.open(str(tmp_path / "queue.db")) as queue:
        app = create_app(queue, LocalBlobStore(tmp_path / "blobs"), tokens={"t": "alice"})
        with ApiServer(app, port=0) as srv:
            yield srv


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail("headless Chromium is not installed: apt-get install chromium (make setup does)")


def _dump_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` after its scripts ran, in headless Chromium offline but for loopback."""
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    # Its own process group: the browser's helper processes go with it, even on a timeout.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out.decode()


def test_swagger_ui_renders_every_route_without_internet(server: ApiServer, tmp_path: Path) -> None:
    dom = _dump_dom(f"{server.url}/docs", tmp_path / "profile")
    assert 'class="swagger-ui"' in dom, "Swagger UI did not render"
    assert set(re.findall(r'data-path="([^"]+)"', dom)) >= ROUTES
    assert "Fleet Active Learning labeling API" in dom
    html = httpx.get(f"{server.url}/docs").text
    assert not re.findall(r'(?:src|href)="https?://', html), "the page loads something remote"


def test_redoc_renders_without_internet(server: ApiServer, tmp_path: Path) -> None:
    dom = _dump_dom(f"{server.url}/redoc", tmp_path / "profile")
    assert "/v1/tasks/claim" in dom, "ReDoc did not render the operations"
    html = httpx.get(f"{server.url}/redoc").text
    assert not re.findall(r'(?:src|href)="https?://', html), "the page loads something remote"
