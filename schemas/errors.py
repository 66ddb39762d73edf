"""The one exception tree of the ``schemas`` package.

Everything ``schemas`` raises on bad input is a :class:`SchemaError`; callers route it to a
counted dead-letter path rather than letting it stop a consumer loop::

    SchemaError                      base of every wire-contract error
    ├── DecodeError                  bytes are not a message: bad magic, truncated, garbage
    │   └── ChunkDecodeError         ... of a chunk (also a ChunkError)
    ├── UnsupportedVersionError      well-formed, but a (type, major, minor) this reader
    │                                does not know: upgrade the reader
    ├── ValidationError              a message or point cloud refused on encode (names the field)
    └── ChunkError                   chunking and reassembly; carries ``frame_key``
        ├── ChunkDecodeError
        ├── DuplicateChunkError      same index seen twice: harmless, state untouched
        ├── ChunkMismatchError       index / count / size / sha256 disagree with earlier chunks
        ├── ChecksumMismatchError    assembled payload's sha256 is wrong; frame quarantined
        └── FrameTooLargeError       manifest total_size above the reader's max_frame_bytes

``ValidationError`` is also a :class:`ValueError`, so generic callers that expect
``ValueError`` for bad arguments keep working.
"""

from __future__ import annotations

__all__ = [
    "ChecksumMismatchError",
    "ChunkDecodeError",
    "ChunkError",
    "ChunkMismatchError",
    "DecodeError",
    "DuplicateChunkError",
    "FrameTooLargeError",
    "SchemaError",
    "UnsupportedVersionError",
    "ValidationError",
]


class SchemaError(Exception):
    """Base of every error raised by ``schemas``."""


class DecodeError(SchemaError):
    """The bytes are not a valid message (bad magic, truncated, corrupt body)."""


class UnsupportedVersionError(SchemaError):
    """The message is well formed but its (type, major, minor) is unknown to this reader."""

    def __init__(
        self,
        message: str,
        *,
        message_type: str,
        seen: tuple[int, int],
        supported: tuple[tuple[int, int], ...],
    ) -> None:
        super().__init__(message)
        self.message_type = message_type
        self.seen = seen
        self.supported = supported


class ValidationError(SchemaError, ValueError):
    """A value refused on encode; ``field`` names it (dotted path, e.g. ``selection.score``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ChunkError(SchemaError):
    """Base of chunking and reassembly errors; ``frame_key`` is set when known."""

    def __init__(self, message: str, *, frame_key: str | None = None) -> None:
        super().__init__(message)
        self.frame_key = frame_key


class ChunkDecodeError(ChunkError, DecodeError):
    """The bytes are not a chunk: bad magic, unknown chunk version, truncated, bad header."""


class DuplicateChunkError(ChunkError):
    """The same chunk index of a frame arrived twice (at-least-once delivery); ignore it."""


class ChunkMismatchError(ChunkError):
    """A chunk disagrees with earlier chunks of the same frame key; the chunk was not kept."""


class ChecksumMismatchError(ChunkError):
    """The assembled payload does not hash to the manifest's sha256; the frame was quarantined."""


class FrameTooLargeError(ChunkError):
    """The manifest's total_size exceeds the reader's ``max_frame_bytes``; the chunk was refused."""
