"""Installs are reproducible: the lock agrees with pyproject.toml, and doctests do not compare
floats digit for digit (another BLAS kernel prints ``0.39999999999999997`` for ``0.4``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
UV = ROOT / ".cache" / "uv-env" / "bin" / "uv"


def test_doctests_match_floats_to_their_written_precision(tmp_path: Path) -> None:
    """The repo's own doctest options, run by pytest on the float that was red."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    flags = " ".join(options["ini_options"].get("doctest_optionflags", []))
    # What selector.aggregate.detection_score printed on a fresh machine (numpy 2.4.6,
    # OpenBLAS SkylakeX kernel), against the example's written value.
    (tmp_path / "example.py").write_text(
        'def f() -> None:\n    """\n    >>> 0.39999999999999997\n    0.4\n    """\n'
    )
    (tmp_path / "pytest.ini").write_text(f"[pytest]\ndoctest_optionflags = {flags}\n")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--doctest-modules"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    result = run()
    assert result.returncode == 0, result.stdout
    assert "1 passed" in result.stdout
    # The same example without the repo's options is the exact comparison that was red.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    assert run().returncode == 1


def _uv() -> str:
    if not UV.exists():
        pytest.fail(f"{UV} is missing: run `make venv` (it bootstraps uv there)")
    return str(UV)


def _lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_uv(), "lock", "--check", "--project", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_lock_agrees_with_pyproject(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    ok = _lock_check(tmp_path)
    assert ok.returncode == 0, ok.stderr

    # A dependency dropped from pyproject.toml without `make lock`: the check must fail.
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    assert '    "lz4>=4",\n' in text
    pyproject.write_text(text.replace('    "lz4>=4",\n', ""))
    drifted = _lock_check(tmp_path)
    assert drifted.returncode != 0
    assert "needs to be updated" in drifted.stderr
