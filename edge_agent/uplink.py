"""Bounded uplink for the commands that end (``replay --kafka``, ``send``), and quiet client logs.

The daemon's sink never gives up: a vehicle may be offline for hours and its spool waits. A
command a person typed must end, though. :func:`wait_delivered` waits until every sendable
frame of a spool was acknowledged and gives up, with :class:`UplinkTimeoutError`, once the broker
has acknowledged nothing for ``timeout_s`` (``kafka.stall_timeout_s``, default 60 s; the clock
restarts at every acknowledgement, so a slow but working link is never cut off). The error names
the address, says how many frames are left and where the spool that keeps them is, and how to
send them later (``edge-agent send SPOOL --kafka HOST``).

kafka-python logs every reconnect attempt (about two lines a second with no broker).
:class:`KafkaLogSummary` takes the ``kafka`` loggers' records and writes one line per interval
(``kafka.log_summary_s``, default 30 s) that says how many there were and quotes the last
warning or error; ``--log-level DEBUG`` shows them all. docs/spool-and-sink.md has the story.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.errors import EdgeAgentError
from edge_agent.sink import KafkaSink
from edge_agent.spool import Spool, SpoolError

log = logging.getLogger(__name__)

__all__ = [
    "FramesHeldError",
    "KafkaLogSummary",
    "SendResult",
    "UplinkError",
    "UplinkTimeoutError",
    "install_kafka_log_summary",
    "send_spool",
    "wait_delivered",
]

_POLL_S: Final = 0.1
KAFKA_LOGGER: Final = "kafka"


class UplinkError(EdgeAgentError):
    """Frames could not all be sent; those left stay in ``spool_path``."""

    def __init__(self, message: str, *, address: str, spool_path: Path, frames_left: int) -> None:
        super().__init__(message)
        self.address = address
        self.spool_path = spool_path
        self.frames_left = frames_left


class UplinkTimeoutError(UplinkError):
    """Kafka acknowledged nothing for ``timeout_s``."""


class FramesHeldError(UplinkError):
    """Everything else was sent, but the broker refused some frames for good (held)."""


def _sendable(spool: Spool) -> int:
    s = spool.stats()
    return s.pending + s.inflight


def wait_delivered(
    sink: KafkaSink,
    spool: Spool,
    *,
    timeout_s: float,
    topic: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until nothing sendable is left in ``spool``; raise when progress stalls.

    "Stalls": no frame acknowledged for ``timeout_s``, counted from the call or the last
    acknowledgement. The sink's thread must be running.
    """
    address = ",".join(sink.config.bootstrap_servers)
    last_sent = sink.stats().frames_sent_total
    last_progress = clock()
    while True:
        try:
            left = _sendable(spool)
        except SpoolError:
            left = -1
        if left == 0:
            _raise_if_held(spool, address)
            return
        sent = sink.stats().frames_sent_total
        now = clock()
        if sent != last_sent:
            last_sent, last_progress = sent, now
        elif now - last_progress >= timeout_s:
            raise UplinkTimeoutError(
                f"Kafka at {address} acknowledged nothing for {timeout_s:.0f} s "
                f"(kafka.stall_timeout_s); {max(left, 0)} selected frame(s) were not sent and "
                f"are kept in the spool {spool.path}. Check that a broker listens there, then "
                f"send them with: edge-agent send {spool.path} --kafka {address} --topic {topic}",
                address=address,
                spool_path=spool.path,
                frames_left=max(left, 0),
            )
        sleep(_POLL_S)


def _raise_if_held(spool: Spool, address: str) -> None:
    held = spool.held_frames(limit=5)
    if not held:
        return
    count = spool.stats().held
    listed = ", ".join(f"{h.frame_key} ({h.nbytes} bytes: {h.error})" for h in held)
    raise FramesHeldError(
        f"Kafka at {address} refused {count} frame(s) for good: {listed}. They are kept, held, "
        f"in the spool {spool.path}; after fixing the cause (e.g. the topic's max.message.bytes "
        f"or its ACL) send them with: edge-agent send {spool.path} --kafka {address}",
        address=address,
        spool_path=spool.path,
        frames_left=count,
    )


@dataclass(frozen=True, slots=True)
class SendResult:
    """What :func:`send_spool` did."""

    frames_sent: int
    frames_left: int


def send_spool(
    path: Path,
    sink_factory: Callable[[Spool], KafkaSink],
    *,
    timeout_s: float,
    remove_when_empty: bool = True,
) -> SendResult:
    """Send every frame of a kept spool file (``edge-agent send``); bounded like a replay.

    The spool file (and its ``-wal``) is deleted once empty when ``remove_when_empty``; on a
    timeout it stays, with what is left, and :class:`UplinkTimeoutError` is raised.
    """
    if not path.exists():
        raise EdgeAgentError(f"spool {path} does not exist")
    spool = Spool(path, max_bytes=max(path.stat().st_size * 2, 1 << 20))
    released = spool.release_held()  # asked for by name: held frames get a fresh try
    if released:
        log.info("%d held frame(s) of %s get a fresh try", released, path)
    sink = sink_factory(spool)
    empty = False
    try:
        sink.start()
        wait_delivered(sink, spool, timeout_s=timeout_s, topic=sink.config.topic)
        empty = spool.stats().frames == 0
    finally:
        sink.stop(drain_timeout_s=0.0)
        sent = sink.stats().frames_sent_total
        left = spool.stats().frames
        spool.close()
    if empty and remove_when_empty:
        remove_spool_file(path)
    return SendResult(frames_sent=sent, frames_left=left)


def remove_spool_file(path: Path) -> None:
    """Delete a spool file and its SQLite side files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


class KafkaLogSummary(logging.Handler):
    """Summarises the ``kafka`` loggers' records: at most one line per ``interval_s``.

    The first warning or error is written at once (so the first failure shows without delay);
    later records are counted and summarised, quoting the last warning or error, once the
    interval is up, or by :meth:`close`. Lines go to ``target`` at INFO, or at WARNING when a
    warning or error was among them.
    """

    def __init__(
        self,
        interval_s: float,
        target: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(level=logging.DEBUG)
        self.interval_s = interval_s
        self.target = target
        self._clock = clock
        self._last_line: float | None = None
        self._since: float | None = None
        self._count = 0
        self._errors = 0
        self._last_problem = ""
        self._level = logging.INFO
        self.lines_written = 0
        self.records_seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        # getMessage() now: the line keeps text, never the client's exception objects.
        self.records_seen += 1
        self._count += 1
        if record.levelno >= logging.WARNING:
            self._errors += 1
            self._last_problem = f"{record.name}: {record.getMessage()}"
            self._level = logging.WARNING
        now = self._clock()
        if self._since is None:
            self._since = now
        if self._last_line is None:
            # the first problem shows at once; chatter alone waits for the interval
            due = self._errors > 0 or now - self._since >= self.interval_s
        else:
            due = now - self._last_line >= self.interval_s
        if due:
            self._write(now)

    def _write(self, now: float) -> None:
        if self._count == 0:
            return
        span = 0.0 if self._since is None else now - self._since
        problem = f"; last: {self._last_problem}" if self._last_problem else ""
        self.target.log(
            self._level,
            "kafka-python: %d log line(s) in the last %.0f s (%d warning(s) or error(s))%s "
            "(--log-level DEBUG shows every line)",
            self._count,
            span,
            self._errors,
            problem,
        )
        self.lines_written += 1
        self._last_line = self._since = now
        self._count = self._errors = 0
        self._last_problem = ""
        self._level = logging.INFO

    def close(self) -> None:
        self.acquire()
        try:
            if self._errors:  # what is still counted, unless it was only chatter
                self._write(self._clock())
        finally:
            self.release()
        super().close()


def install_kafka_log_summary(interval_s: float) -> KafkaLogSummary | None:
    """Route the ``kafka`` loggers into a :class:`KafkaLogSummary`; None when ``interval_s``
    is 0 (kafka-python's lines pass through unchanged). Called by the CLI only."""
    if interval_s <= 0:
        return None
    logger = logging.getLogger(KAFKA_LOGGER)
    summary = KafkaLogSummary(interval_s, logging.getLogger("edge_agent.kafka_client"))
    logger.addHandler(summary)
    logger.propagate = False
    return summary


def remove_kafka_log_summary(summary: KafkaLogSummary | None) -> None:
    """Undo :func:`install_kafka_log_summary`, writing what is still counted."""
    if summary is None:
        return
    logger = logging.getLogger(KAFKA_LOGGER)
    logger.removeHandler(summary)
    logger.propagate = True
    summary.close()
