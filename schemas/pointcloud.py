"""The LiDAR sweep codec: quantised, column-transformed, compressed, self-describing.

:func:`encode_points` turns an ``(N, C)`` float array (``x, y, z`` first, then e.g. intensity and
ring) into bytes ~4-5x smaller than the raw float32 sweep; :func:`decode_points` gives it back.
Every column is transformed so a general-purpose compressor finds structure in it:

* ``x, y, z`` are quantised to int32 multiples of ``quantum_m`` (default 1 mm), delta-coded
  along the scan order (neighbouring returns are close), zig-zag mapped (small negative deltas
  become small unsigned numbers) and byte-shuffled (all low bytes, then all second bytes, ...).
  A decoded coordinate is within ``quantum_m / 2`` of the original, plus the float32 rounding
  of the result (half an ulp, ~4 µm at 100 m). A coordinate beyond ``±(2**31 - 1) * quantum_m``
  (±2147 km at 1 mm) is refused with :class:`~schemas.errors.ValidationError`.
* every other column is stored **exactly** when it is a small non-negative decimal: values that
  are multiples of 1, 0.1, 0.01 or 0.001 between 0 and 65535 units come back bit-identical, as
  uint8 when they fit, else byte-shuffled uint16. This covers nuScenes intensity (0..255) and
  ring (0..31) and KITTI reflectance (multiples of 0.01 in [0, 1]).
* an ``intensity`` / ``reflectance`` column that is not such a decimal is stored as float16
  (relative error at most 2**-11, ~0.05 %); any other column as byte-shuffled float32 (lossless).

Measured on the bundled KITTI and nuScenes sweeps (``python -m bench.codec``), the delta +
zig-zag + shuffle transform roughly triples what zstd gets from the raw float32 bytes; lz4 is
faster and compresses less; ``none`` keeps only the transform.

Layout (little endian)::

    offset size field
    0      3    magic b"FPC"
    3      1    format version (1)
    4      1    compression (0 none, 1 zstd, 2 lz4)
    5      1    column count C
    6      4    point count N (uint32)
    10     8    quantum_m (float64)
    18     8    uncompressed body length (uint64)
    26     4    crc32 of bytes 0..25, the column table and the uncompressed body
    30          column table, C times: name length (uint8), name (ASCII), codec (uint8),
                decimal scale (uint16)
    ...         body, compressed: each column's transformed bytes in order

>>> import numpy as np
>>> pts = np.array([[1.0, 2.0, 3.0, 0.5], [1.1, 2.0, 3.0, 0.25]], dtype=np.float32)
>>> cloud = decode_points(encode_points(pts))
>>> cloud.fields, bool(np.abs(cloud.points - pts).max() <= 0.0005)
(('x', 'y', 'z', 'intensity'), True)
"""

from __future__ import annotations

import importlib
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zstandard
from numpy.typing import NDArray

from schemas.errors import DecodeError, ValidationError
from schemas.messages import LidarPayload

__all__ = [
    "DEFAULT_FIELDS",
    "PC_MAGIC",
    "PC_VERSION",
    "Compression",
    "PointCloud",
    "decode_lidar",
    "decode_points",
    "encode_points",
    "lidar_payload",
]

PC_MAGIC = b"FPC"
PC_VERSION = 1
_HEAD = struct.Struct("<3sBBBIdQ")
_CRC = struct.Struct("<I")
_COL = struct.Struct("<BH")  # codec, decimal scale (after the name)
_HEAD_SIZE = _HEAD.size + _CRC.size  # 30

Compression = Literal["zstd", "lz4", "none"]
_COMPRESSION_CODES: dict[str, int] = {"none": 0, "zstd": 1, "lz4": 2}
_COMPRESSION_NAMES = {v: k for k, v in _COMPRESSION_CODES.items()}

# column codecs
_QDELTA_I32 = 1  # quantised by quantum_m, delta, zig-zag, shuffled int32
_U8 = 2  # exact decimal: value = stored / scale
_U16 = 3  # exact decimal, shuffled
_F16 = 4  # shuffled float16 (intensity only)
_F32 = 5  # shuffled float32
_ITEMSIZE = {_QDELTA_I32: 4, _U8: 1, _U16: 2, _F16: 2, _F32: 4}
_DECIMAL_SCALES = (1, 10, 100, 1000)
_PROBE = 1024
_LOSSY_OK = frozenset({"intensity", "reflectance"})

DEFAULT_FIELDS: dict[int, tuple[str, ...]] = {
    3: ("x", "y", "z"),
    4: ("x", "y", "z", "intensity"),
    5: ("x", "y", "z", "intensity", "ring"),
}
_MAX_COLUMNS = 16
_I32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PointCloud:
    """A decoded sweep: ``points`` is ``(N, C)`` float32, one column per name in ``fields``."""

    points: NDArray[np.float32]
    fields: tuple[str, ...]
    quantum_m: float
    compression: str

    @property
    def point_count(self) -> int:
        return int(self.points.shape[0])


# --- helpers ----------------------------------------------------------------------------------


def _shuffle(a: NDArray[Any]) -> bytes:
    """Byte planes of a 1-D array: all byte 0s, then all byte 1s, ..."""
    if a.itemsize == 1:
        return a.tobytes()
    return np.ascontiguousarray(a.view(np.uint8).reshape(-1, a.itemsize).T).tobytes()


def _unshuffle(buf: memoryview, n: int, dtype: type[np.generic]) -> NDArray[Any]:
    size = np.dtype(dtype).itemsize
    planes = np.frombuffer(buf, dtype=np.uint8, count=n * size)
    if size == 1:
        return planes.view(dtype).copy()
    return np.ascontiguousarray(planes.reshape(size, n).T).view(dtype).reshape(n)


def _exact_decimal(col: NDArray[np.float32]) -> tuple[int, int] | None:
    """(codec, scale) storing ``col`` bit-exactly as uint8/uint16 decimals, or None."""
    if col.size == 0:
        return _U8, 1
    wide = col.astype(np.float64)
    head, head_wide = col[:_PROBE], wide[:_PROBE]
    for scale in _DECIMAL_SCALES:
        probe = np.rint(head_wide * scale)  # rule most scales out on a prefix, cheaply
        if not np.array_equal((probe / scale).astype(np.float32), head):
            continue
        units = np.rint(wide * scale)
        lo, hi = float(units.min()), float(units.max())
        if lo < 0 or hi > 0xFFFF:
            continue
        if np.array_equal((units / scale).astype(np.float32), col):
            return (_U8 if hi <= 0xFF else _U16), scale
    return None


def _lz4_frame() -> Any:
    """``lz4.frame``, imported on first use: lz4 is optional (it ships no type stubs either)."""
    return importlib.import_module("lz4.frame")


def _compressor(compression: str, level: int | None) -> Any:
    if compression == "lz4":
        try:
            lz4_frame = _lz4_frame()
        except ImportError as exc:  # lz4 is optional; zstd is the default and a dependency
            raise ValidationError("compression", "lz4 needs the 'lz4' package installed") from exc
        return lambda b: lz4_frame.compress(b, compression_level=level or 0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=1 if level is None else level).compress
    return bytes


# --- encode -----------------------------------------------------------------------------------


def encode_points(
    points: NDArray[np.floating[Any]],
    *,
    fields: tuple[str, ...] | list[str] | None = None,
    quantum_m: float = 0.001,
    compression: Compression = "zstd",
    level: int | None = None,
) -> bytes:
    """Encode an ``(N, C)`` sweep (columns ``x, y, z`` first); see the module docstring.

    ``fields`` defaults by column count: 3 ``x,y,z``, 4 adds ``intensity``, 5 adds ``ring``.
    ``level`` is the compressor's level (zstd default 1: on these sweeps level 3 compresses no
    better and encodes slower, see ``bench.codec``; lz4 frame default 0).
    Raises :class:`ValidationError` for a bad shape, NaN/inf points or out-of-range coordinates.
    """
    arr = np.asarray(points)
    if arr.ndim != 2 or not 3 <= arr.shape[1] <= _MAX_COLUMNS:
        raise ValidationError(
            "points", f"must be an (N, C) array with 3 <= C <= {_MAX_COLUMNS}, got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValidationError("points", f"must be a float array, got {arr.dtype}")
    n, c = arr.shape
    names = tuple(fields) if fields is not None else DEFAULT_FIELDS.get(c)
    if names is None:
        raise ValidationError("fields", f"no default names for {c} columns; pass fields=")
    if len(names) != c or names[:3] != ("x", "y", "z") or len(set(names)) != c:
        raise ValidationError(
            "fields", f"need {c} unique names starting with x, y, z, got {list(names)}"
        )
    for name in names:
        if not (name.isascii() and name.isprintable() and 0 < len(name) < 256):
            raise ValidationError("fields", f"field name {name!r} must be 1-255 ASCII characters")
    if not (np.isfinite(quantum_m) and quantum_m > 0):
        raise ValidationError("quantum_m", f"must be a positive finite number, got {quantum_m}")
    if compression not in _COMPRESSION_CODES:
        raise ValidationError(
            "compression", f"{compression!r} is not one of {', '.join(_COMPRESSION_CODES)}"
        )
    if n > 0xFFFFFFFF:
        raise ValidationError("points", f"{n} points, at most {0xFFFFFFFF}")
    compress = _compressor(compression, level)

    pts = arr.astype(np.float32, copy=False)
    if not np.isfinite(pts).all():
        bad = np.flatnonzero(~np.isfinite(pts).all(axis=1))
        raise ValidationError(
            "points", f"{bad.size} of {n} points have NaN or inf values (first at row {bad[0]})"
        )

    # x, y, z together: quantise, range-check, delta along the scan, zig-zag
    units = np.rint(pts[:, :3].astype(np.float64) / quantum_m)
    if n:
        peak = np.abs(units).max(axis=0)
        too_far = np.flatnonzero(peak > _I32_MAX)
        if too_far.size:
            axis = int(too_far[0])
            raise ValidationError(
                f"points.{names[axis]}",
                f"|{names[axis]}| up to {float(np.abs(pts[:, axis]).max()):.6g} m does not fit "
                f"int32 at quantum_m={quantum_m} (limit {_I32_MAX * quantum_m:.6g} m); "
                "use a coarser quantum",
            )
    q = units.astype(np.int32)
    d = np.diff(q, axis=0, prepend=np.zeros((1, 3), np.int32))  # int32 wraps; cumsum undoes it
    zz = ((d << 1) ^ (d >> 31)).view(np.uint32)

    table: list[bytes] = []
    body: list[bytes] = []
    for j, name in enumerate(names):
        col = pts[:, j]
        scale = 1
        if j < 3:
            codec = _QDELTA_I32
            body.append(_shuffle(np.ascontiguousarray(zz[:, j])))
        else:
            exact = _exact_decimal(col)
            if exact is not None:
                codec, scale = exact
                units = np.rint(col.astype(np.float64) * scale)
                body.append(_shuffle(units.astype(np.uint8 if codec == _U8 else np.uint16)))
            elif name in _LOSSY_OK and float(np.abs(col).max()) <= 65504.0:
                codec = _F16
                body.append(_shuffle(col.astype(np.float16)))
            else:
                codec = _F32
                body.append(_shuffle(np.ascontiguousarray(col)))
        raw_name = name.encode("ascii")
        table.append(bytes([len(raw_name)]) + raw_name + _COL.pack(codec, scale))

    table_bytes = b"".join(table)
    raw_body = b"".join(body)
    head = _HEAD.pack(
        PC_MAGIC,
        PC_VERSION,
        _COMPRESSION_CODES[compression],
        c,
        n,
        quantum_m,
        len(raw_body),
    )
    crc = zlib.crc32(raw_body, zlib.crc32(table_bytes, zlib.crc32(head)))
    return b"".join((head, _CRC.pack(crc), table_bytes, compress(raw_body)))


# --- decode -----------------------------------------------------------------------------------


def decode_points(
    data: bytes | bytearray | memoryview, *, max_points: int = 10_000_000
) -> PointCloud:
    """Decode bytes from :func:`encode_points`; :class:`DecodeError` for anything malformed.

    ``max_points`` bounds the memory a corrupt or hostile header can make the decoder allocate.
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if len(view) < _HEAD_SIZE:
        if bytes(view[:3]) != PC_MAGIC[: len(view)]:
            raise DecodeError(f"not a point cloud: bad magic {bytes(view[:3])!r}")
        raise DecodeError(f"truncated point cloud: {len(view)} bytes, header is {_HEAD_SIZE}")
    magic, version, comp_code, c, n, quantum_m, raw_len = _HEAD.unpack_from(view)
    if magic != PC_MAGIC:
        raise DecodeError(f"not a point cloud: bad magic {magic!r}, expected {PC_MAGIC!r}")
    if version != PC_VERSION:
        raise DecodeError(
            f"point cloud format version {version} is not supported (this reader knows "
            f"{PC_VERSION}); upgrade the reader"
        )
    compression = _COMPRESSION_NAMES.get(comp_code)
    if compression is None:
        raise DecodeError(f"corrupt point cloud: unknown compression code {comp_code}")
    if not 3 <= c <= _MAX_COLUMNS or not (np.isfinite(quantum_m) and quantum_m > 0):
        raise DecodeError(f"corrupt point cloud header: {c} columns, quantum {quantum_m}")
    if n > max_points:
        raise DecodeError(f"point cloud claims {n} points, above max_points={max_points}")
    (crc,) = _CRC.unpack_from(view, _HEAD.size)

    pos = _HEAD_SIZE
    columns: list[tuple[str, int, int]] = []
    try:
        for _ in range(c):
            name_len = view[pos]
            name = str(view[pos + 1 : pos + 1 + name_len], "ascii")
            pos += 1 + name_len
            codec, scale = _COL.unpack_from(view, pos)
            pos += _COL.size
            columns.append((name, codec, scale))
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(f"truncated or corrupt point cloud column table: {exc}") from exc
    for name, codec, scale in columns:
        if codec not in _ITEMSIZE or scale not in _DECIMAL_SCALES:
            raise DecodeError(f"corrupt point cloud: column {name!r} codec {codec} scale {scale}")
    expected = n * sum(_ITEMSIZE[codec] for _, codec, _ in columns)
    if raw_len != expected:
        raise DecodeError(
            f"corrupt point cloud: body is {raw_len} bytes, {n} points need {expected}"
        )

    table_end = pos
    raw_body = _decompress(compression, view[table_end:], raw_len)
    if len(raw_body) != raw_len:
        raise DecodeError(
            f"truncated point cloud body: {len(raw_body)} bytes after {compression}, "
            f"header says {raw_len}"
        )
    head = view[: _HEAD.size]
    if zlib.crc32(raw_body, zlib.crc32(view[_HEAD_SIZE:table_end], zlib.crc32(head))) != crc:
        raise DecodeError("corrupt point cloud: crc32 mismatch")

    out = np.empty((n, c), dtype=np.float32)
    body = memoryview(raw_body)
    off = 0
    for j, (_, codec, scale) in enumerate(columns):
        size = n * _ITEMSIZE[codec]
        chunk = body[off : off + size]
        off += size
        if codec == _QDELTA_I32:
            u = _unshuffle(chunk, n, np.uint32)
            d = (u >> np.uint32(1)).view(np.int32) ^ -(u & np.uint32(1)).view(np.int32)
            q = np.cumsum(d, dtype=np.int32)
            out[:, j] = q.astype(np.float64) * quantum_m
        elif codec in (_U8, _U16):
            units = _unshuffle(chunk, n, np.uint8 if codec == _U8 else np.uint16)
            out[:, j] = units.astype(np.float64) / scale
        elif codec == _F16:
            out[:, j] = _unshuffle(chunk, n, np.float16)
        else:
            out[:, j] = _unshuffle(chunk, n, np.float32)
    return PointCloud(out, tuple(name for name, _, _ in columns), float(quantum_m), compression)


def _decompress(compression: str, payload: memoryview, raw_len: int) -> bytes:
    if compression == "none":
        return bytes(payload)
    try:
        if compression == "zstd":
            # A corrupt frame header could claim any size: check it before anything is allocated.
            claimed = zstandard.frame_content_size(payload)
            if claimed != raw_len:
                raise DecodeError(
                    f"corrupt zstd point cloud body: frame claims {claimed} bytes, "
                    f"header says {raw_len}"
                )
            dec: Any = zstandard.ZstdDecompressor().decompressobj()
            out = bytes(dec.decompress(payload))
        else:
            try:
                lz4_frame = _lz4_frame()
            except ImportError as exc:
                raise DecodeError(
                    "this sweep is lz4-compressed; install the 'lz4' package"
                ) from exc
            dec = lz4_frame.LZ4FrameDecompressor()
            out = bytes(dec.decompress(payload, max_length=raw_len))
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd point cloud body: {exc}") from exc
    except RuntimeError as exc:  # lz4.frame raises RuntimeError on corrupt input
        raise DecodeError(f"corrupt lz4 point cloud body: {exc}") from exc
    if not dec.eof:
        raise DecodeError(f"truncated {compression} point cloud body")
    if dec.unused_data:
        raise DecodeError(f"{len(dec.unused_data)} trailing bytes after the {compression} body")
    return out


# --- envelope glue ----------------------------------------------------------------------------


def lidar_payload(
    points: NDArray[np.floating[Any]],
    *,
    fields: tuple[str, ...] | list[str] | None = None,
    quantum_m: float = 0.001,
    compression: Compression = "zstd",
    level: int | None = None,
) -> LidarPayload:
    """:func:`encode_points` wrapped as the envelope's :class:`LidarPayload`."""
    data = encode_points(
        points, fields=fields, quantum_m=quantum_m, compression=compression, level=level
    )
    names = tuple(fields) if fields is not None else DEFAULT_FIELDS[np.shape(points)[1]]
    return LidarPayload(int(np.shape(points)[0]), names, quantum_m, compression, data)


def decode_lidar(payload: LidarPayload, *, max_points: int = 10_000_000) -> PointCloud:
    """Decode a :class:`LidarPayload`, checking it agrees with the point-cloud header."""
    cloud = decode_points(payload.data, max_points=max_points)
    if cloud.point_count != payload.point_count or cloud.fields != payload.fields:
        raise DecodeError(
            f"lidar payload says {payload.point_count} points {payload.fields}, its data holds "
            f"{cloud.point_count} points {cloud.fields}"
        )
    return cloud
