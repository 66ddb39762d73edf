"""Is any Kafka bootstrap server accepting connections? A probe that leaks nothing.

kafka-python 3.0's ``KafkaConsumer`` and ``KafkaProducer`` start a network thread and open
sockets before they bootstrap, and a constructor that fails to bootstrap (``KafkaTimeoutError:
Unable to bootstrap``) closes neither: measured here, every failed attempt left one thread and
four file descriptors behind. A service that retries "construct the client" through an outage
of hours runs out of both. Both sides therefore probe with a plain TCP connect first and build
their clients only once a server accepts.

>>> first_reachable(["127.0.0.1:1"], timeout_s=0.5)[0] is None
True
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

__all__ = ["METADATA_MAX_AGE_MS", "first_reachable", "split_host_port"]

METADATA_MAX_AGE_MS = 15_000
"""``metadata_max_age_ms`` of our group consumers (kafka-python's default: 5 minutes).

A group leader that assigns while its metadata cache lacks the topic's partitions ("No
partition metadata for topic", seen right after a broker restart or a topic's creation)
assigns nothing; kafka-python 3.0.12 rejoins when later metadata differs, but the group then
sat idle until the next refresh. One metadata request per 15 s per consumer is cheap."""


def split_host_port(server: str, default_port: int = 9092) -> tuple[str, int]:
    """``"host:port"``, ``"[::1]:9092"`` or ``"host"`` as (host, port).

    >>> split_host_port("[::1]:9093")
    ('::1', 9093)
    >>> split_host_port("broker-1")
    ('broker-1', 9092)
    """
    text = server.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:  # no port, or a bare IPv6 address
        return text, default_port
    return host, int(port)


def first_reachable(servers: Sequence[str], timeout_s: float = 3.0) -> tuple[str | None, str]:
    """The first of ``servers`` that accepts a TCP connection, or None and why none did."""
    errors: list[str] = []
    for server in servers:
        try:
            host, port = split_host_port(server)
            with socket.create_connection((host, port), timeout=timeout_s):
                return server, "accepting connections"
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
    return None, "; ".join(errors) or "no bootstrap servers configured"
