"""A child started with ``die_with_parent`` dies when its parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# A parent that starts a long sleep (with or without the hook), prints the sleeper's pid, and
# waits: the test SIGKILLs it, as a timeout kills a test session.
_PARENT = """
import subprocess, sys, time
from deploy.lifetime import die_with_parent
hook = die_with_parent if sys.argv[1] == "tied" else None
child = subprocess.Popen(["sleep", "120"], start_new_session=True, preexec_fn=hook)
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose (its reaper, PID 1 here, may be slow)
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def _orphan_after_parent_killed(mode: str) -> int:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, mode], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    with parent:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    return pid


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_a_tied_child_dies_with_its_killed_parent() -> None:
    pid = _orphan_after_parent_killed("tied")
    assert _wait_gone(pid, 10.0), f"sleep {pid} outlived its SIGKILLed parent"


def test_an_untied_child_outlives_its_killed_parent() -> None:
    """The control: without the hook the orphan lives on (what left the brokers running)."""
    pid = _orphan_after_parent_killed("untied")
    try:
        assert not _wait_gone(pid, 1.0)
    finally:
        os.kill(pid, signal.SIGKILL)


def test_sweep_removes_only_directories_whose_owner_is_gone(tmp_path: Path) -> None:
    from deploy.lifetime import OWNER_FILE, owned_tempdir, sweep_orphans

    mine = owned_tempdir("svc-", tmp_path)
    with subprocess.Popen(["true"]) as gone:
        gone.wait(timeout=30)
    orphan = tmp_path / "svc-orphan"
    orphan.mkdir()
    (orphan / OWNER_FILE).write_text(f"{gone.pid} 1")
    reused = tmp_path / "svc-reused"  # our pid, another start time: a reused pid
    reused.mkdir()
    (reused / OWNER_FILE).write_text(f"{os.getpid()} 1")
    legacy = tmp_path / "svc-legacy"  # no owner file: not ours to judge
    legacy.mkdir()

    assert sorted(sweep_orphans("svc-", tmp_path)) == sorted([orphan, reused])
    assert mine.is_dir()
    assert legacy.is_dir()
