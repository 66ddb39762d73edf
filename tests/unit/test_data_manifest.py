"""The bundled real data is what its manifest says it is, and small enough to ship."""

from __future__ import annotations

import hashlib
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "data"
MAX_FILE_BYTES = 5 * 1024 * 1024


def _manifest_rows() -> list[list[str]]:
    lines = (DATA / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    return [row for row in rows if len(row) >= 7]


def test_every_manifest_file_is_present_with_its_checksum() -> None:
    rows = _manifest_rows()
    assert len(rows) >= 40, "the manifest lost its rows"
    checked = 0
    for row in rows:
        path, size, sha = DATA / row[0], row[1], row[2]
        assert path.is_file(), f"{row[0]} is in MANIFEST.tsv but missing from data/"
        if len(sha) == 64:  # converted files carry '-' instead of a checksum
            blob = path.read_bytes()
            assert hashlib.sha256(blob).hexdigest() == sha, f"{row[0]}: sha256 differs"
            assert len(blob) == int(size), f"{row[0]}: size differs"
            checked += 1
    assert checked >= 40


def test_every_data_file_is_attributed_and_small() -> None:
    listed = {row[0] for row in _manifest_rows()}
    for path in DATA.rglob("*"):
        if path.is_file() and path.name not in {"MANIFEST.tsv", "README.md", "LICENSE.md"}:
            rel = path.relative_to(DATA).as_posix()
            assert rel in listed, f"{rel} has no row (origin, licence) in data/MANIFEST.tsv"
            assert path.stat().st_size <= MAX_FILE_BYTES, f"{rel} is over 5 MB"
