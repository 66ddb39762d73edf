"""Child process for the kill -9 tests of the spool and the sink; run it, never import it.

``spool`` mode puts frames into a spool in a loop, leases some, acks or nacks them, and
records every completed step in a log *after* the spool call returned, one line each::

    I <key>     about to put
    P <key>     put returned "stored"
    R <key>     put returned something else ("rejected")
    E <key>     evicted by a put that returned
    a <key>     about to ack
    A <key>     ack returned
    L <key>     leased (left in flight, never acked)

So after the kill the parent knows which put and which ack were cut short, if any.

The payload and score of a key are derived from the key (:func:`payload_for`), so the parent
can check every surviving entry byte for byte. The parent SIGKILLs the child at a random
moment and checks the reopened spool against the log.

``sink`` mode runs a :class:`edge_agent.sink.KafkaSink` against a broker on an existing spool
until killed, printing ``ready`` once it started sending.

    python spool_crash_child.py spool DB LOG MAX_BYTES PREFIX SEED
    python spool_crash_child.py sink DB BOOTSTRAP TOPIC
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def payload_for(key: str) -> bytes:
    """Deterministic payload of 1 KB .. 61 KB for ``key``."""
    digest = hashlib.sha256(key.encode()).digest()
    size = 1000 + int.from_bytes(digest[:4], "little") % 60_000
    return (digest * (size // len(digest) + 1))[:size]


def score_for(key: str) -> float:
    digest = hashlib.sha256(b"score:" + key.encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32


def _spool_loop(db: str, log_path: str, max_bytes: int, prefix: str, seed: int) -> None:
    from edge_agent.spool import Spool

    rng = random.Random(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(tag: str, keys: list[str] | tuple[str, ...]) -> None:
        if keys:
            os.write(fd, "".join(f"{tag} {k}\n" for k in keys).encode())

    spool = Spool(db, max_bytes=max_bytes)
    print("ready", flush=True)
    i = 0
    while True:
        key = f"{prefix}-{i:07d}"
        i += 1
        record("I", [key])
        result = spool.put(key, payload_for(key), score_for(key))
        if result.stored:
            record("E", result.evicted_keys)
            record("P", [key])
        else:
            record("R", [key])
        roll = rng.random()
        if roll < 0.3:
            leased = [e.frame_key for e in spool.lease(rng.randint(1, 4), 1 << 20)]
            half = len(leased) // 2
            record("a", leased[:half])
            spool.ack(leased[:half])
            record("A", leased[:half])
            spool.nack(leased[half:])
        elif roll < 0.35:
            record("L", [e.frame_key for e in spool.lease(1, 1 << 20)])


def _sink_loop(db: str, bootstrap: str, topic: str) -> None:
    from edge_agent.sink import KafkaSink, SinkConfig
    from edge_agent.spool import Spool

    spool = Spool(db, max_bytes=1 << 30)
    config = SinkConfig(
        bootstrap_servers=(bootstrap,),
        topic=topic,
        batch_max_frames=4,
        batch_max_bytes=4 << 20,
        max_message_bytes=100_000,
    )
    sink = KafkaSink(config, spool)
    sink.start()
    print("ready", flush=True)
    while True:
        time.sleep(1.0)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    if argv[0] == "spool":
        _spool_loop(argv[1], argv[2], int(argv[3]), argv[4], int(argv[5]))
    elif argv[0] == "sink":
        _sink_loop(argv[1], argv[2], argv[3])
    else:
        print(f"unknown mode {argv[0]!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
