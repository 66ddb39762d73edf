"""Services we start die with the process that started them, even when it is SIGKILLed.

A test session killed by a timeout once left two Kafka JVMs running under PID 1 for an hour:
``atexit`` hooks and fixture teardowns never run when the parent is killed outright. Linux's
parent-death signal does: :func:`die_with_parent` is a ``preexec_fn`` that asks the kernel to
SIGKILL the child the moment its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``)::

    subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_parent)

Two things to know, both from prctl(2):

- "parent" is the *thread* that forked the child. Start long-lived services from a thread that
  lives as long as they should (the main thread, a session fixture), not from a worker thread.
- The setting survives ``execve`` and a change of user made by ``Popen(user=...)`` (which
  happens before ``preexec_fn``), but not the exec of a set-user-ID binary.

The race where the parent dies between ``fork`` and ``prctl`` is closed by checking that the
parent is still the one that forked us, and exiting at once otherwise.

Outside Linux (no ``prctl``) :func:`die_with_parent` does nothing; the ``atexit`` hooks of the
service wrappers remain the only line of defence there.

A killed owner also leaves its services' temporary directories (Kafka logs, a PostgreSQL
cluster). :func:`owned_tempdir` records who made each one; the next service started on the
machine removes those whose owner is gone (:func:`sweep_orphans`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from schemas.lifetime import PR_SET_PDEATHSIG, die_with_parent

__all__ = ["OWNER_FILE", "PR_SET_PDEATHSIG", "die_with_parent", "owned_tempdir", "sweep_orphans"]

OWNER_FILE = ".fleetal-owner"
"""In a service's temporary directory: ``<pid> <start time>`` of the process that made it."""


def _identity(pid: int) -> str | None:
    """``"<pid> <start time in clock ticks>"``: a pid alone may have been reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None if sys.platform.startswith("linux") else f"{pid} ?"
    fields = stat.rsplit(") ", 1)[1].split()
    if fields[0] == "Z":  # a zombie is gone for our purpose
        return None
    return f"{pid} {fields[19]}"  # field 22 of stat(5); fields[0] is field 3


def owned_tempdir(prefix: str, base: str | os.PathLike[str] | None = None) -> Path:
    """A fresh ``mkdtemp`` directory marked with this process as its owner, after removing
    the directories of ``prefix`` that owners killed outright left behind."""
    sweep_orphans(prefix, base)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (path / OWNER_FILE).write_text(_identity(os.getpid()) or f"{os.getpid()} ?")
    return path


def sweep_orphans(prefix: str, base: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the ``prefix*`` directories under ``base`` (default: the temp dir) whose owner
    process is gone; the removed paths. Directories without an owner file are left alone."""
    removed: list[Path] = []
    root = Path(base) if base is not None else Path(tempfile.gettempdir())
    for path in root.glob(f"{prefix}*"):
        try:
            owner = (path / OWNER_FILE).read_text().strip()
            pid = int(owner.split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _identity(pid) == owner:
            continue  # its owner still runs
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
            removed.append(path)
    return removed
