"""Split payloads larger than a Kafka message into chunks, and put them back together.

A frame (six camera images plus a LiDAR sweep) is several MB; a Kafka message is ~1 MB by
default. :func:`split_payload` cuts an encoded payload into self-describing chunks that each fit
``max_message_bytes``; every chunk carries the manifest (frame key, index, count, total size,
sha256 of the whole payload), so the reader needs no separate manifest message and chunks of
many frames may interleave and arrive in any order. :class:`Reassembler` collects them, verifies
the sha256, bounds its memory and quarantines frames that stay incomplete.

Producers must use the frame key as the Kafka record key so that every chunk of a frame lands on
the same partition and therefore with the same consumer.

Chunk wire layout (little endian, 62-byte header, then key, then data)::

    offset size field
    0      3    magic b"FLC"
    3      1    chunk format version (1)
    4      2    key length K (uint16)
    6      4    index (uint32, 0-based)
    10     4    count (uint32, >= 1)
    14     8    total_size (uint64, bytes of the whole payload)
    22     4    data length D (uint32)
    26     32   sha256 of the whole payload
    58     4    crc32 of bytes 0..57 and the key (catches garbage and torn headers)
    62     K    frame key, UTF-8
    62+K   D    data

>>> chunks = split_payload("veh-1/drive-7/000042", b"x" * 1000, max_message_bytes=400)
>>> len(chunks), max(len(c) for c in chunks) <= 400
(4, True)
>>> r = Reassembler(max_frame_bytes=10_000, max_inflight_bytes=100_000, timeout_s=30.0)
>>> [r.add(c, now=0.0) for c in reversed(chunks)][-1] == b"x" * 1000
True
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.errors import (
    ChecksumMismatchError,
    ChunkDecodeError,
    ChunkMismatchError,
    DuplicateChunkError,
    FrameTooLargeError,
    ValidationError,
)

__all__ = [
    "CHUNK_HEADER_SIZE",
    "CHUNK_MAGIC",
    "CHUNK_VERSION",
    "Chunk",
    "Reassembler",
    "chunk_overhead",
    "decode_chunk",
    "encode_chunk",
    "split_payload",
]

CHUNK_MAGIC = b"FLC"
CHUNK_VERSION = 1
_HEADER = struct.Struct("<3sBHIIQI32s")  # everything but the crc
_CRC = struct.Struct("<I")
CHUNK_HEADER_SIZE = _HEADER.size + _CRC.size  # 62
_MAX_KEY_BYTES = 0xFFFF
_MAX_U32 = 0xFFFFFFFF

Buffer = bytes | bytearray | memoryview
QuarantineHook = Callable[[str, str, list["Chunk"]], None]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a payload, with the manifest of the whole payload."""

    frame_key: str
    index: int  # 0-based
    count: int
    total_size: int  # bytes of the whole payload
    sha256: bytes  # 32 bytes, of the whole payload
    data: bytes


def chunk_overhead(frame_key: str) -> int:
    """Bytes a chunk of ``frame_key`` adds on top of its data."""
    return CHUNK_HEADER_SIZE + len(frame_key.encode("utf-8"))


def _key_bytes(frame_key: str) -> bytes:
    if not frame_key:
        raise ValidationError("frame_key", "must not be empty")
    key = frame_key.encode("utf-8")
    if len(key) > _MAX_KEY_BYTES:
        raise ValidationError("frame_key", f"{len(key)} bytes long, at most {_MAX_KEY_BYTES}")
    return key


def _pack_header(
    key: bytes, index: int, count: int, total_size: int, data_len: int, sha256: bytes
) -> bytes:
    head = _HEADER.pack(
        CHUNK_MAGIC, CHUNK_VERSION, len(key), index, count, total_size, data_len, sha256
    )
    crc = zlib.crc32(key, zlib.crc32(head))
    return head + _CRC.pack(crc) + key


def encode_chunk(chunk: Chunk) -> bytes:
    """Serialise one chunk; raises :class:`ValidationError` for an inconsistent chunk."""
    key = _key_bytes(chunk.frame_key)
    if len(chunk.sha256) != 32:
        raise ValidationError("sha256", f"must be 32 bytes, got {len(chunk.sha256)}")
    if not 1 <= chunk.count <= _MAX_U32:
        raise ValidationError("count", f"must be in 1..{_MAX_U32}, got {chunk.count}")
    if not 0 <= chunk.index < chunk.count:
        raise ValidationError("index", f"must be in 0..{chunk.count - 1}, got {chunk.index}")
    if not len(chunk.data) <= chunk.total_size < 2**64:
        raise ValidationError(
            "total_size", f"{chunk.total_size} is below this chunk's {len(chunk.data)} data bytes"
        )
    if len(chunk.data) > _MAX_U32:
        raise ValidationError("data", f"{len(chunk.data)} bytes, at most {_MAX_U32} per chunk")
    head = _pack_header(
        key, chunk.index, chunk.count, chunk.total_size, len(chunk.data), chunk.sha256
    )
    return b"".join((head, chunk.data))


def decode_chunk(raw: Buffer) -> Chunk:
    """Parse one chunk; raises :class:`ChunkDecodeError` naming what is wrong."""
    view = memoryview(raw)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    if size < CHUNK_HEADER_SIZE:
        if bytes(view[:3]) != CHUNK_MAGIC[:size]:
            raise ChunkDecodeError(f"not a chunk: bad magic {bytes(view[:3])!r}")
        raise ChunkDecodeError(
            f"truncated chunk: {size} bytes, header alone is {CHUNK_HEADER_SIZE}"
        )
    magic, version, key_len, index, count, total_size, data_len, sha = _HEADER.unpack_from(view)
    if magic != CHUNK_MAGIC:
        raise ChunkDecodeError(f"not a chunk: bad magic {magic!r}, expected {CHUNK_MAGIC!r}")
    if version != CHUNK_VERSION:
        raise ChunkDecodeError(
            f"unsupported chunk format version {version} (this reader knows {CHUNK_VERSION}); "
            "upgrade the reader"
        )
    key_end = CHUNK_HEADER_SIZE + key_len
    if size < key_end:
        raise ChunkDecodeError(f"truncated chunk: {size} bytes, header and key need {key_end}")
    (crc,) = _CRC.unpack_from(view, _HEADER.size)
    key_view = view[CHUNK_HEADER_SIZE:key_end]
    if zlib.crc32(key_view, zlib.crc32(view[: _HEADER.size])) != crc:
        raise ChunkDecodeError("corrupt chunk header: crc32 mismatch")
    try:
        frame_key = str(key_view, "utf-8")
    except UnicodeDecodeError as exc:
        raise ChunkDecodeError(f"corrupt chunk: frame key is not UTF-8 ({exc})") from exc
    if size != key_end + data_len:
        what = "truncated" if size < key_end + data_len else "trailing bytes after"
        raise ChunkDecodeError(
            f"{what} chunk {index}/{count} of {frame_key!r}: {size} bytes, "
            f"header says {key_end + data_len}",
            frame_key=frame_key,
        )
    if not key_len or count < 1 or index >= count or data_len > total_size:
        raise ChunkDecodeError(
            f"inconsistent chunk header for {frame_key!r}: index={index} count={count} "
            f"data={data_len} total={total_size}",
            frame_key=frame_key or None,
        )
    return Chunk(frame_key, index, count, total_size, sha, bytes(view[key_end:]))


def split_payload(frame_key: str, payload: bytes, max_message_bytes: int) -> list[bytes]:
    """Encoded chunks of ``payload``, each at most ``max_message_bytes`` long.

    ``max_message_bytes`` bounds the chunk encoding itself (header and key included); leave room
    below the broker's ``max.message.bytes`` for Kafka's own record and batch overhead. A small
    payload, the empty one included, gives exactly one chunk.
    """
    key = _key_bytes(frame_key)
    room = max_message_bytes - CHUNK_HEADER_SIZE - len(key)
    if room < 1:
        raise ValidationError(
            "max_message_bytes",
            f"{max_message_bytes} leaves no room for data after the "
            f"{CHUNK_HEADER_SIZE + len(key)}-byte chunk header of {frame_key!r}",
        )
    room = min(room, _MAX_U32)
    view = memoryview(payload)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    total = len(view)
    count = max(1, -(-total // room))
    if count > _MAX_U32:
        raise ValidationError("max_message_bytes", f"{count} chunks needed, at most {_MAX_U32}")
    sha = hashlib.sha256(view).digest()
    out: list[bytes] = []
    for index in range(count):
        piece = view[index * room : (index + 1) * room]
        head = _pack_header(key, index, count, total, len(piece), sha)
        out.append(b"".join((head, piece)))
    return out


@dataclass(slots=True)
class _Partial:
    count: int
    total_size: int
    sha256: bytes
    first_seen: float
    chunks: dict[int, Chunk] = field(default_factory=dict)
    held: int = 0

    def held_chunks(self) -> list[Chunk]:
        return [self.chunks[i] for i in sorted(self.chunks)]


class Reassembler:
    """Collects chunks of interleaved frames and returns each verified payload once complete.

    Memory is bounded by ``max_inflight_bytes`` (data bytes of incomplete frames): when a chunk
    would exceed it, the oldest incomplete frames (by first chunk seen) other than the chunk's own
    are quarantined with reason ``"memory"``. Frames incomplete for more than ``timeout_s`` after
    their first chunk are quarantined with reason ``"timeout"`` by :meth:`expire`; a frame whose
    assembled payload fails its sha256 with reason ``"checksum"``. ``on_quarantine(frame_key,
    reason, chunks_held)`` is called after the frame has left the reassembler's state.

    Time is passed in (``now``, seconds on any monotonic clock): the reassembler reads no clock.
    Not thread-safe; one per consumer.
    """

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        max_inflight_bytes: int,
        timeout_s: float,
        on_quarantine: QuarantineHook | None = None,
    ) -> None:
        if max_frame_bytes < 0:
            raise ValueError(f"max_frame_bytes must be >= 0, got {max_frame_bytes}")
        if max_inflight_bytes < max_frame_bytes:
            raise ValueError(
                f"max_inflight_bytes ({max_inflight_bytes}) must be >= max_frame_bytes "
                f"({max_frame_bytes}), or a single allowed frame could never be held"
            )
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.max_frame_bytes = max_frame_bytes
        self.max_inflight_bytes = max_inflight_bytes
        self.timeout_s = timeout_s
        self.on_quarantine = on_quarantine
        self._frames: OrderedDict[str, _Partial] = OrderedDict()
        self._inflight_bytes = 0

    @property
    def inflight_frames(self) -> int:
        """Incomplete frames held."""
        return len(self._frames)

    @property
    def inflight_bytes(self) -> int:
        """Data bytes of incomplete frames held."""
        return self._inflight_bytes

    def pending_keys(self) -> list[str]:
        """Keys of incomplete frames, oldest first."""
        return list(self._frames)

    def add(self, raw: Buffer | Chunk, now: float) -> bytes | None:
        """Add one chunk; the verified whole payload once its frame is complete, else None."""
        chunk = raw if isinstance(raw, Chunk) else decode_chunk(raw)
        key = chunk.frame_key
        partial = self._frames.get(key)
        if partial is not None:
            self._check_consistent(partial, chunk)
            if chunk.index in partial.chunks:
                raise DuplicateChunkError(
                    f"duplicate chunk {chunk.index}/{chunk.count} of {key!r}", frame_key=key
                )
            if partial.held + len(chunk.data) > partial.total_size:
                raise ChunkMismatchError(
                    f"chunk {chunk.index}/{chunk.count} of {key!r} would bring the frame to "
                    f"{partial.held + len(chunk.data)} bytes, manifest says {partial.total_size}",
                    frame_key=key,
                )
        else:
            self._check_manifest(chunk)
            if chunk.count == 1:
                return self._verified(key, chunk.data, chunk.sha256, [chunk])

        if partial is not None and len(partial.chunks) + 1 == partial.count:
            del self._frames[key]
            self._inflight_bytes -= partial.held
            partial.chunks[chunk.index] = chunk
            held = partial.held_chunks()
            payload = b"".join(c.data for c in held)
            return self._verified(key, payload, partial.sha256, held)

        self._make_room(key, len(chunk.data))
        if partial is None:
            partial = _Partial(chunk.count, chunk.total_size, chunk.sha256, now)
            self._frames[key] = partial
        partial.chunks[chunk.index] = chunk
        partial.held += len(chunk.data)
        self._inflight_bytes += len(chunk.data)
        return None

    def expire(self, now: float) -> list[str]:
        """Quarantine frames incomplete for more than ``timeout_s``; their keys, oldest first."""
        expired = [k for k, p in self._frames.items() if now - p.first_seen > self.timeout_s]
        for key in expired:
            self._quarantine(key, "timeout")
        return expired

    def _check_manifest(self, chunk: Chunk) -> None:
        key = chunk.frame_key
        if chunk.total_size > self.max_frame_bytes:
            raise FrameTooLargeError(
                f"frame {key!r} is {chunk.total_size} bytes, this reader accepts at most "
                f"{self.max_frame_bytes} (max_frame_bytes)",
                frame_key=key,
            )
        if (
            chunk.count < 1
            or not 0 <= chunk.index < chunk.count
            or len(chunk.sha256) != 32
            or len(chunk.data) > chunk.total_size
        ):
            raise ChunkMismatchError(
                f"chunk {chunk.index}/{chunk.count} of {key!r} is inconsistent "
                f"(data {len(chunk.data)} bytes, total {chunk.total_size})",
                frame_key=key,
            )

    @staticmethod
    def _check_consistent(partial: _Partial, chunk: Chunk) -> None:
        diffs = []
        if chunk.count != partial.count:
            diffs.append(f"count {chunk.count} != {partial.count}")
        if chunk.total_size != partial.total_size:
            diffs.append(f"total_size {chunk.total_size} != {partial.total_size}")
        if chunk.sha256 != partial.sha256:
            diffs.append(f"sha256 {chunk.sha256.hex()[:12]}.. != {partial.sha256.hex()[:12]}..")
        if not 0 <= chunk.index < partial.count:
            diffs.append(f"index {chunk.index} out of range 0..{partial.count - 1}")
        if diffs:
            raise ChunkMismatchError(
                f"chunk {chunk.index} of {chunk.frame_key!r} disagrees with earlier chunks: "
                + ", ".join(diffs),
                frame_key=chunk.frame_key,
            )

    def _verified(self, key: str, payload: bytes, sha: bytes, held: list[Chunk]) -> bytes:
        got = hashlib.sha256(payload).digest()
        if got != sha:
            if self.on_quarantine is not None:
                self.on_quarantine(key, "checksum", held)
            raise ChecksumMismatchError(
                f"frame {key!r}: assembled {len(payload)} bytes hash to {got.hex()[:16]}.., "
                f"manifest says {sha.hex()[:16]}..; frame quarantined",
                frame_key=key,
            )
        return payload

    def _make_room(self, key: str, needed: int) -> None:
        while self._inflight_bytes + needed > self.max_inflight_bytes:
            victim = next((k for k in self._frames if k != key), None)
            if victim is None:  # only this frame left; it fits by the __init__ invariant
                break
            self._quarantine(victim, "memory")

    def _quarantine(self, key: str, reason: str) -> None:
        partial = self._frames.pop(key)
        self._inflight_bytes -= partial.held
        if self.on_quarantine is not None:
            self.on_quarantine(key, reason, partial.held_chunks())
