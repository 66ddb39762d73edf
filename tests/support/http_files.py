"""A real HTTP server on loopback for as long as a ``with`` block runs: the model server a
vehicle downloads from. It serves fixed routes (status, body) and files under a directory,
and records the headers of every request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Served:
    base_url: str
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location (a 302)
    requests: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def serving(root: Path | None = None, *, prefix: str = "") -> Iterator[Served]:
    """``Served.routes[path] = (status, body)`` answers ``path``; other paths under
    ``prefix`` are files of ``root``; anything else is 404."""
    served = Served("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append({k.lower(): v for k, v in self.headers.items()})
            if self.path in served.redirects:
                self.send_response(302)
                self.send_header("Location", served.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, body = served.routes.get(self.path, (404, b"not found"))
            if self.path not in served.routes and root is not None:
                rel = self.path.removeprefix(prefix).lstrip("/")
                path = (root / rel).resolve()
                if rel and path.is_file() and root.resolve() in path.parents:
                    status, body = 200, path.read_bytes()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
