"""An ``edge-agent run`` daemon as a child of the test, dying with it (tests only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deploy.lifetime import die_with_parent

REPO = Path(__file__).resolve().parents[2]


def spawn_agent(cfg: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start the daemon on ``cfg`` with ``env``, its output appended to ``log``."""
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=die_with_parent,  # a killed test session leaves no daemon behind
        )
