"""Wire codec benchmark on the bundled real data: ``python -m bench.codec [--repeat N]``.

Three tables; within each, the rows are timed round-robin (one run of each row in turn,
``--repeat`` rounds, median per row), so that load on a shared machine hits every row alike and
the ratios between rows mean something even when the absolute numbers wander:

1. the frame envelope (six nuScenes JPEGs + one KITTI sweep): encode / decode MB/s;
2. chunking a 20 MiB payload into 1 MB messages: split and reassemble MB/s;
3. the point-cloud codec per real sweep: compression ratio against the raw float32 bytes and
   encode / decode MB/s (of raw float32 bytes) for zstd, lz4 and none, beside the baseline of
   plain zstd over the raw float32 bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import zstandard
from numpy.typing import NDArray

from schemas.chunking import Reassembler, split_payload
from schemas.messages import CameraPayload, EgoPose, FrameEnvelope, ModelInfo, SelectionRecord
from schemas.pointcloud import Compression, decode_points, encode_points, lidar_payload
from schemas.wire import decode_frame, encode

DATA = Path(__file__).resolve().parents[1] / "data"
MB = 1e6


def _race(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(f"\n{title}")
    print(line(header))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def _sweeps() -> dict[str, NDArray[np.float32]]:
    out = {}
    for path in sorted((DATA / "kitti_object" / "training" / "velodyne").glob("*.bin")):
        out[f"kitti {path.stem}"] = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    nus = next((DATA / "nuscenes_sample").glob("*LIDAR_TOP*.pcd.bin"))
    out["nuscenes LIDAR_TOP"] = np.fromfile(nus, dtype=np.float32).reshape(-1, 5)
    return out


def _frame(sweep: NDArray[np.float32]) -> FrameEnvelope:
    cams = []
    for path in sorted((DATA / "nuscenes_sample").glob("*__CAM_*.jpg")):
        name = path.name.split("__")[1]
        cams.append(CameraPayload(name, "jpeg", 1600, 900, path.read_bytes()))
    sha = hashlib.sha256(b"bench").hexdigest()
    return FrameEnvelope(
        vehicle_id="veh-0001",
        drive_id="bench",
        frame_seq=1,
        timestamp_ns=1_532_402_927_647_951_000,
        pose=EgoPose.from_heading(1.0, 2.0, 0.0, 0.5),
        cameras=tuple(cams),
        lidar=lidar_payload(sweep),
        selection=SelectionRecord(0.9, 0.5, "entropy", "above threshold", sha, {"entropy": 0.9}),
        models=(ModelInfo("det", "1.0.0", sha),),
        agent_version="0.1.0",
    )


def bench_envelope(sweep: NDArray[np.float32], repeat: int) -> None:
    frame = _frame(sweep)
    raw = encode(frame)
    jpeg_bytes = sum(len(c.data) for c in frame.cameras)
    sensor_in = (jpeg_bytes + sweep.nbytes) / MB

    def full() -> bytes:
        return encode(dataclasses.replace(frame, lidar=lidar_payload(sweep)))

    t = _race(
        {"encode": lambda: encode(frame), "decode": lambda: decode_frame(raw), "full": full},
        repeat,
    )
    size = len(raw) / MB
    rows = [
        ["envelope encode (validate + Avro)", f"{size:.2f}", f"{t['encode'] * 1e3:.2f}",
         f"{size / t['encode']:.0f}"],
        ["envelope decode (Avro + validate)", f"{size:.2f}", f"{t['decode'] * 1e3:.2f}",
         f"{size / t['decode']:.0f}"],
        ["sweep codec + envelope encode", f"{sensor_in:.2f} in", f"{t['full'] * 1e3:.2f}",
         f"{sensor_in / t['full']:.0f}"],
    ]  # fmt: skip
    _table(
        f"frame envelope: 6 nuScenes JPEGs ({jpeg_bytes / MB:.2f} MB) + KITTI 000000 sweep "
        f"({sweep.nbytes / MB:.2f} MB float32, zstd) -> {len(raw) / MB:.2f} MB message",
        ["operation", "MB", "ms (median)", "MB/s"],
        rows,
    )


def bench_chunking(repeat: int) -> None:
    payload = os.urandom(20 * 1024 * 1024)
    max_msg = 1_000_000
    key = "veh-0001/bench/000001"
    chunks = split_payload(key, payload, max_msg)

    def reassemble() -> None:
        r = Reassembler(max_frame_bytes=64 << 20, max_inflight_bytes=128 << 20, timeout_s=60.0)
        out = None
        for c in chunks:
            out = r.add(c, now=0.0)
        if out is None or len(out) != len(payload):
            raise RuntimeError("reassembly failed")

    t = _race(
        {
            "split": lambda: split_payload(key, payload, max_msg),
            "join": reassemble,
            "sha": lambda: hashlib.sha256(payload).digest(),
            "copy": lambda: bytes(bytearray(payload)),
        },
        repeat,
    )
    size = len(payload) / MB
    overhead = sum(len(c) for c in chunks) - len(payload)
    rows = [
        [label, f"{t[k] * 1e3:.1f}", f"{size / t[k]:.0f}"]
        for label, k in [
            ("split_payload", "split"),
            ("Reassembler.add, every chunk", "join"),
            ("(reference: sha256 of the payload)", "sha"),
            ("(reference: two memory copies)", "copy"),
        ]
    ]
    _table(
        f"chunking: {size:.1f} MB payload, max_message_bytes={max_msg}: {len(chunks)} chunks, "
        f"{overhead} bytes of chunk headers in all",
        ["operation", "ms (median)", "MB/s"],
        rows,
    )


def bench_pointcloud(sweeps: dict[str, NDArray[np.float32]], repeat: int) -> None:
    variants: list[tuple[str, Compression, int | None]] = [
        ("zstd (default, level 1)", "zstd", None),
        ("zstd level 3", "zstd", 3),
        ("lz4", "lz4", None),
        ("none (transform only)", "none", None),
    ]
    rows = []
    for sweep_name, pts in sweeps.items():
        raw = pts.tobytes()
        cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
        base = cctx.compress(raw)
        encoded = {v: encode_points(pts, compression=c, level=lv) for v, c, lv in variants}
        fns: dict[str, Callable[[], Any]] = {
            "base enc": partial(cctx.compress, raw),
            "base dec": partial(dctx.decompress, base),
        }
        for v, c, lv in variants:
            fns[f"{v} enc"] = partial(encode_points, pts, compression=c, level=lv)
            fns[f"{v} dec"] = partial(decode_points, encoded[v])
        t = _race(fns, repeat)
        size = len(raw) / MB
        rows.append(
            [f"{sweep_name} ({len(pts)} pts, {pts.shape[1]} cols, {size:.2f} MB)",
             "baseline: zstd-3 of raw float32", f"{len(raw) / len(base):.2f}",
             f"{size / t['base enc']:.0f}", f"{size / t['base dec']:.0f}", "lossless"]
        )  # fmt: skip
        for v, _, _ in variants:
            err = float(np.abs(decode_points(encoded[v]).points[:, :3] - pts[:, :3]).max())
            rows.append(
                ["", v, f"{len(raw) / len(encoded[v]):.2f}", f"{size / t[f'{v} enc']:.0f}",
                 f"{size / t[f'{v} dec']:.0f}", f"{err * 1e3:.3f} mm"]
            )  # fmt: skip
    _table(
        "point cloud: ratio = raw float32 bytes / encoded bytes; MB/s of raw float32 bytes; "
        "xyz error = max |decoded - original| at quantum 1 mm",
        ["sweep", "codec", "ratio", "enc MB/s", "dec MB/s", "xyz error"],
        rows,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds per table (median)")
    args = parser.parse_args(argv)
    sweeps = _sweeps()
    bench_envelope(sweeps["kitti 000000"], args.repeat)
    bench_chunking(max(3, args.repeat // 2))
    bench_pointcloud(sweeps, args.repeat)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
