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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from typing import Any

__all__ = ["PR_SET_PDEATHSIG", "die_with_parent"]

PR_SET_PDEATHSIG = 1

# Resolved once at import: after fork, only async-signal-safe work (one libc call) remains.
_prctl: Any = None
if sys.platform.startswith("linux"):
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _prctl = _libc.prctl
    _prctl.restype = ctypes.c_int
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL this child when the thread that forked it dies."""
    if _prctl is None:
        return
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
