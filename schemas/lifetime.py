"""A child process that dies with the thread that started it, even when that is SIGKILLed.

``subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_parent)`` asks the kernel
to SIGKILL the child the moment its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``). Used
by the ingest service for its trainers and by the test tools for the services they start
(``deploy.lifetime``, which says more). "Parent" is the *thread* that forked the child
(prctl(2)); the race where the parent dies between ``fork`` and ``prctl`` is closed by checking
that the parent is still the one that forked us. Outside Linux it does nothing.

Here, in the shared package, because the centre's code runs it and ``deploy/`` is not installed.
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
