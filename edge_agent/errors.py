"""Exceptions of the edge agent, one tree.

::

    EdgeAgentError
     +-- SourceOpenError            a source cannot be opened at all (raised at construction)
     |    +-- LayoutNotRecognisedError   open_source() found no known layout at the path
     +-- BadInputError              bad content in one frame's input; internal to the
     |                              sources, which turn it into a SourceError value
     +-- ReportDirError             the replay report directory cannot be written (checked
                                    before the replay starts)

Bad *content* inside an opened source is never raised: it becomes a
``edge_agent.frame.SourceError`` value that the source yields in place of the frame, and
the loop carries on. Only problems that make the whole source unusable (the path does not
exist, the layout is unknown, the index file that lists every frame is unreadable) are
exceptions, raised once, when the source is built, with the path in the message.
Third-party errors (pyarrow, PIL, mcap) are caught where they happen and either wrapped
here (``raise SourceOpenError(...) from exc``) or turned into a ``SourceError`` value.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.frame import SourceErrorReason

__all__ = [
    "BadInputError",
    "EdgeAgentError",
    "LayoutNotRecognisedError",
    "ReportDirError",
    "SourceOpenError",
]


class EdgeAgentError(Exception):
    """Base of every exception the edge agent raises on purpose."""


class SourceOpenError(EdgeAgentError):
    """A source could not be opened; the message names the path and what to check."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class LayoutNotRecognisedError(SourceOpenError):
    """``open_source`` found no supported recording layout at the path."""


class BadInputError(EdgeAgentError):
    """Bad content in the input of one frame (a truncated image, a short point file).

    Raised by the readers' helpers and caught by their per-frame loop, which yields it as
    a ``SourceError`` value (same ``reason``, ``path``, ``message``, ``sensor``) and goes on
    with the next frame. It never escapes ``frames()``.
    """

    def __init__(
        self, reason: SourceErrorReason, path: str | Path, message: str, sensor: str = ""
    ) -> None:
        super().__init__(f"{path}: {message}")
        self.reason = reason
        self.path = str(path)
        self.message = message
        self.sensor = sensor


class ReportDirError(EdgeAgentError):
    """``--report DIR`` cannot be created or written; the message names it and the cause."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
