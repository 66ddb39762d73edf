"""Poll a condition until it holds, or fail naming what was awaited (tests only)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(what: str, ok: Callable[[], object], timeout_s: float, interval_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")
