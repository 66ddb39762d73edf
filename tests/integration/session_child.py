"""A test session that holds real services, for ``test_no_orphans.py`` to SIGKILL.

Not collected by the main session (not named ``test_*``); run explicitly as
``pytest tests/integration/session_child.py``, it starts the session's Kafka broker and
PostgreSQL server through the ordinary fixtures plus a Prometheus, writes their pids to the
file named by ``FLEETAL_SESSION_CHILD_OUT`` and waits to be killed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psycopg

from deploy.kafka.broker import LocalKafka
from deploy.prometheus.local import LocalPrometheus


def test_hold_services(kafka: LocalKafka, postgres: str) -> None:
    with psycopg.connect(postgres) as conn:  # read while the backend lives: its parent
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        status = Path(f"/proc/{backend[0]}/status").read_text()
    postmaster = int(next(ln for ln in status.splitlines() if ln.startswith("PPid:")).split()[1])
    prometheus = LocalPrometheus([kafka.bootstrap]).start()
    pids = {"kafka": kafka.pid, "postgres": postmaster, "prometheus": prometheus.pid}
    dirs = {"kafka": str(kafka.workdir), "prometheus": str(prometheus._dir)}
    out = Path(os.environ["FLEETAL_SESSION_CHILD_OUT"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pids": pids, "dirs": dirs}))
    tmp.rename(out)
    time.sleep(240)  # the parent test SIGKILLs this session long before
