"""Blob store throughput, local directory vs S3 on loopback: ``python -m bench.blobstore``.

Side by side in one run, alternating order each round, median over the rounds:

* ``local fsync``: :class:`~ingest_service.blobstore.LocalBlobStore` as the service runs it
  (every blob and its directory fsynced);
* ``local no-fsync``: the same without fsync (page cache only: the upper bound of the disk path);
* ``s3 (moto, loopback)``: :class:`~ingest_service.blobstore.S3BlobStore` through boto3 over
  HTTP to moto's S3 server in a separate process on 127.0.0.1 (needs ``moto[server]``, a test
  dependency). Moto is an in-memory Python emulator, so this measures the client's cost (HTTP,
  signing, sha256 + MD5, HEAD-before-PUT) plus moto's, not what MinIO or AWS would do.

Blobs are the six nuScenes camera JPEGs and the LiDAR sweep of ``data/nuscenes_sample``, made
unique per frame (a trailer after the data) so every put really writes. ``put`` and ``get`` are
reported as MB/s of blob bytes, sequentially and with ``--workers`` threads (the consumer's
``blob_workers``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy.lifetime import die_with_parent
from ingest_service.blobstore import BlobRef, BlobStore, LocalBlobStore, S3BlobStore
from ingest_service.config import S3Section

DATA = Path(__file__).resolve().parents[1] / "data" / "nuscenes_sample"
MB = 1e6
BUCKET = "bench-blobs"


def _blobs(frames: int) -> list[bytes]:
    sources = [p.read_bytes() for p in sorted(DATA.glob("*.jpg"))]
    sources += [p.read_bytes() for p in DATA.glob("*LIDAR_TOP*.pcd.bin")]
    return [data + seq.to_bytes(8, "little") for seq in range(frames) for data in sources]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class MotoProcess:
    """moto's S3 server in a child process (its own interpreter: no GIL shared with us)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start on {self.url}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run_case(store: BlobStore, blobs: list[bytes], workers: int) -> tuple[float, float]:
    """Seconds to put every blob, then to get (and verify) every blob."""
    refs: list[BlobRef] = []
    if workers <= 1:
        put_s = _timed(lambda: refs.extend(store.put(b) for b in blobs))
        get_s = _timed(lambda: [store.get(r) for r in refs])
    else:
        with ThreadPoolExecutor(workers) as pool:
            put_s = _timed(lambda: refs.extend(pool.map(store.put, blobs)))
            get_s = _timed(lambda: list(pool.map(store.get, refs)))
    for ref in refs:
        store.delete(ref)
    return put_s, get_s


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.blobstore", description=__doc__)
    p.add_argument("--frames", type=int, default=20, help="frames of 7 blobs (~1.3 MB) each")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="threads of the parallel runs")
    args = p.parse_args(argv)
    blobs = _blobs(args.frames)
    total_mb = sum(len(b) for b in blobs) / MB
    print(f"{len(blobs)} blobs, {total_mb:.1f} MB per pass, {args.rounds} rounds", flush=True)

    moto = MotoProcess()
    tmp = Path(tempfile.mkdtemp(prefix="bench-blobs-"))
    try:
        s3 = S3BlobStore(
            S3Section(
                endpoint_url=moto.url,
                bucket=BUCKET,
                prefix="bench",
                access_key_id="bench",
                secret_access_key="bench-secret",
            ),
            max_pool_connections=max(10, args.workers),
        )
        s3.client.create_bucket(Bucket=BUCKET)
        stores: dict[str, BlobStore] = {
            "local fsync": LocalBlobStore(tmp / "fsync", fsync=True),
            "local no-fsync": LocalBlobStore(tmp / "nofsync", fsync=False),
            "s3 (moto, loopback)": s3,
        }
        results: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for rnd in range(args.rounds):
            order = list(stores) if rnd % 2 == 0 else list(reversed(stores))
            for name in order:
                for workers in (1, args.workers):
                    timing = _run_case(stores[name], blobs, workers)
                    results.setdefault((name, workers), []).append(timing)
        print(f"{'store':<22} {'threads':>7} {'put MB/s':>9} {'get MB/s':>9}")
        for (name, workers), timings in results.items():
            put = total_mb / statistics.median(t[0] for t in timings)
            get = total_mb / statistics.median(t[1] for t in timings)
            print(f"{name:<22} {workers:>7} {put:>9.1f} {get:>9.1f}")
        s3.close()
    finally:
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
