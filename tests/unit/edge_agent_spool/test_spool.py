"""The spool: durability, bound, eviction order, crash recovery, disk full, corruption."""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.spool import Spool, SpoolError
from tests.integration.spool_crash_child import payload_for, score_for

ROOT = Path(__file__).resolve().parents[3]
CHILD = ROOT / "tests" / "integration" / "spool_crash_child.py"


class FakeClock:
    def __init__(self, start_ns: int = 1_700_000_000 * 10**9) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool.db", max_bytes=1000)
    yield s
    s.close()


def test_put_lease_ack_roundtrip(spool: Spool) -> None:
    assert spool.put("a", b"x" * 10, 0.5).stored
    assert spool.put("b", b"y" * 20, 0.9).stored
    entries = spool.lease(10, 10_000)
    assert [e.frame_key for e in entries] == ["b", "a"]
    assert entries[0].payload == b"y" * 20
    assert entries[0].nbytes == 20
    assert spool.keys("inflight") == ["b", "a"]
    assert spool.lease(10, 10_000) == []  # nothing pending any more
    assert spool.ack(["b"]) == 1
    assert spool.keys() == ["a"]
    stats = spool.stats()
    assert (stats.frames, stats.bytes, stats.inflight, stats.acked_total) == (1, 10, 1, 1)


def test_put_is_idempotent_by_key(spool: Spool) -> None:
    assert spool.put("k", b"1234", 0.5).status == "stored"
    again = spool.put("k", b"something else", 0.9)
    assert again.status == "duplicate"
    assert not again.stored
    [entry] = spool.lease(5, 1000)
    assert entry.payload == b"1234"
    assert spool.put("k", b"1234", 0.5).status == "duplicate"  # in flight: still a duplicate
    stats = spool.stats()
    assert (stats.frames, stats.bytes, stats.duplicate_total) == (1, 4, 2)


def test_lease_order_is_score_first_then_oldest(spool: Spool) -> None:
    for key, score in [("a", 0.1), ("b", 0.7), ("c", 0.7), ("d", 0.3)]:
        spool.put(key, b"p", score)
    assert [e.frame_key for e in spool.lease(10, 1000)] == ["b", "c", "d", "a"]


def test_lease_bounds_items_and_bytes_but_always_returns_one(spool: Spool) -> None:
    spool.put("big", b"x" * 600, 0.9)
    spool.put("s1", b"x" * 100, 0.5)
    spool.put("s2", b"x" * 100, 0.4)
    assert [e.frame_key for e in spool.lease(5, 200)] == ["big"]  # over budget alone: still sent
    assert [e.frame_key for e in spool.lease(1, 10_000)] == ["s1"]
    assert [e.frame_key for e in spool.lease(5, 10_000)] == ["s2"]
    with pytest.raises(ValueError, match="positive"):
        spool.lease(0, 10)


def test_nack_returns_to_pending_and_counts_attempts(spool: Spool) -> None:
    spool.put("a", b"p", 0.5)
    [entry] = spool.lease(1, 100)
    assert entry.attempts == 0
    assert spool.nack(["a"]) == 1
    assert spool.nack(["a"]) == 0  # not in flight any more
    [entry] = spool.lease(1, 100)
    assert entry.attempts == 1
    assert spool.stats().nacked_total == 1


def test_full_spool_evicts_lowest_scored_pending_never_inflight(spool: Spool) -> None:
    spool.put("low-inflight", b"x" * 300, 0.05)
    assert [e.frame_key for e in spool.lease(1, 1000)] == ["low-inflight"]
    spool.nack([])  # no-op
    spool.put("keep", b"x" * 300, 0.9)
    spool.put("low", b"x" * 200, 0.1)
    spool.put("mid", b"x" * 200, 0.2)
    spool.put("high-inflight", b"x" * 0, 0.99)
    # 1000 bytes used; a 350-byte frame at 0.5 must evict "low" then "mid", never the in-flight
    # one that scores lower still.
    result = spool.put("new", b"x" * 350, 0.5)
    assert result.stored
    assert result.evicted_keys == ("low", "mid")
    assert result.evicted_bytes == 400
    assert sorted(spool.keys()) == sorted(["low-inflight", "keep", "high-inflight", "new"])
    stats = spool.stats()
    assert stats.bytes == 950
    assert stats.evicted_total == 2


def test_new_frame_scoring_lowest_is_rejected_and_nothing_evicted(spool: Spool) -> None:
    spool.put("a", b"x" * 500, 0.5)
    spool.put("b", b"x" * 500, 0.6)
    result = spool.put("c", b"x" * 10, 0.4)
    assert result.status == "rejected"
    assert "spool full" in result.reason
    assert result.evicted_keys == ()
    assert sorted(spool.keys()) == ["a", "b"]
    # Equal scores do not evict either: the incumbent stays.
    assert spool.put("d", b"x" * 10, 0.5).status == "rejected"
    assert spool.put("too-big", b"x" * 1001, 1.0).status == "rejected"
    assert spool.stats().rejected_total == 3


def test_bad_arguments_raise_value_error(spool: Spool) -> None:
    with pytest.raises(ValueError, match="finite"):
        spool.put("k", b"", float("nan"))
    with pytest.raises(ValueError, match="non-empty"):
        spool.put("", b"", 0.1)
    with pytest.raises(ValueError, match="positive"):
        Spool(spool.path.with_name("other.db"), max_bytes=0)


def test_reopen_requeues_inflight_and_acked_stay_gone(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, max_bytes=10_000) as s:
        for i in range(5):
            s.put(f"k{i}", bytes([i]) * 100, i / 10)
        leased = [e.frame_key for e in s.lease(3, 10_000)]
        assert leased == ["k4", "k3", "k2"]
        s.ack(["k4"])
    with Spool(path, max_bytes=10_000) as s:
        assert s.keys("inflight") == []
        assert s.keys("pending") == ["k3", "k2", "k1", "k0"]
        stats = s.stats()
        assert (stats.frames, stats.bytes) == (4, 400)
        assert [e.payload for e in s.lease(1, 10_000)] == [bytes([3]) * 100]


def test_stats_oldest_age_uses_the_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    with Spool(tmp_path / "s.db", max_bytes=100, clock=clock) as s:
        assert s.stats().oldest_age_s == 0.0
        s.put("a", b"1", 0.1)
        clock.now += 2_500_000_000
        s.put("b", b"2", 0.2)
        clock.now += 500_000_000
        assert s.stats().oldest_age_s == pytest.approx(3.0)
        s.lease(2, 100)
        s.ack(["a"])
        assert s.stats().oldest_age_s == pytest.approx(0.5)


def test_second_owner_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, max_bytes=100) as s:
        s.put("a", b"1", 0.1)
        with pytest.raises(SpoolError, match="locked by another process") as info:
            Spool(path, max_bytes=100)
        assert info.value.kind == "locked"
        assert info.value.path == path
        assert s.keys() == ["a"]


def test_concurrent_put_and_lease_ack_lose_nothing(tmp_path: Path) -> None:
    n = 300
    acked: list[str] = []
    with Spool(tmp_path / "s.db", max_bytes=10**9) as s:
        done = threading.Event()

        def sender() -> None:
            while not done.is_set() or s.stats().pending:
                entries = s.lease(7, 1 << 20)
                keys = [e.frame_key for e in entries]
                s.ack(keys)
                acked.extend(keys)

        thread = threading.Thread(target=sender)
        thread.start()
        for i in range(n):
            assert s.put(f"k{i}", b"x" * (i % 50), random.random()).stored
        done.set()
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert sorted(acked) == sorted(f"k{i}" for i in range(n))
        assert s.stats().frames == 0
        assert s.stats().bytes == 0


# -- the bound and the eviction order, for any sequence of operations -------------------------

_op = st.one_of(
    st.tuples(
        st.just("put"),
        st.integers(0, 400),  # size
        st.floats(0, 1, allow_nan=False).map(lambda x: round(x, 2)),  # coarse: ties happen
        st.integers(0, 40),  # key id: repeats exercise idempotence
    ),
    st.tuples(st.just("lease"), st.integers(1, 4), st.integers(1, 600), st.just(0)),
    st.tuples(st.just("ack"), st.integers(0, 3), st.just(0.0), st.just(0)),
    st.tuples(st.just("nack"), st.integers(0, 3), st.just(0.0), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=1, max_size=40))
def test_bound_holds_and_evictions_are_the_lowest_scored_pending(
    ops: list[tuple[str, int, float, int]],
) -> None:
    max_bytes = 1000
    model: dict[str, tuple[int, float, str]] = {}  # key -> (size, score, state)
    inflight_order: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, Spool(Path(tmp) / "s.db", max_bytes=max_bytes) as s:
        for op, a, b, c in ops:
            if op == "put":
                key = f"k{c}"
                result = s.put(key, b"z" * a, b)
                if key in model:
                    assert result.status == "duplicate"
                    continue
                pending = {k: v for k, v in model.items() if v[2] == "pending"}
                if result.stored:
                    for victim in result.evicted_keys:
                        size, score, state = model.pop(victim)
                        assert state == "pending", "evicted a frame in flight"
                        assert score < b, "evicted a frame scoring as high as the new one"
                    kept = [v[1] for k, v in pending.items() if k not in result.evicted_keys]
                    evicted = [pending[k][1] for k in result.evicted_keys]
                    if evicted and kept:
                        assert max(evicted) <= min(kept), "evicted one that was not the lowest"
                    model[key] = (a, b, "pending")
                else:
                    assert result.status == "rejected"
                    assert result.evicted_keys == ()
                    # Rejected only when the lower-scored pending frames could not make room.
                    lower = sum(v[0] for v in pending.values() if v[1] < b)
                    used = sum(v[0] for v in model.values())
                    assert a > max_bytes or used + a - lower > max_bytes
            elif op == "lease":
                entries = s.lease(a, int(b) if b >= 1 else 1)
                for e in entries:
                    size, score, state = model[e.frame_key]
                    assert state == "pending"
                    model[e.frame_key] = (size, score, "inflight")
                    inflight_order.append(e.frame_key)
            elif op in ("ack", "nack"):
                keys = list(
                    dict.fromkeys(
                        k for k in inflight_order[:a] if k in model and model[k][2] == "inflight"
                    )
                )
                del inflight_order[:a]
                if op == "ack":
                    assert s.ack(keys) == len(keys)
                    for k in keys:
                        model.pop(k)
                else:
                    assert s.nack(keys) == len(keys)
                    for k in keys:
                        model[k] = (model[k][0], model[k][1], "pending")
            stats = s.stats()
            assert stats.bytes <= max_bytes
            assert stats.bytes == sum(v[0] for v in model.values())
            assert sorted(s.keys()) == sorted(model)


# -- disk full and corruption -----------------------------------------------------------------


def test_disk_full_raises_clear_error_and_spool_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, max_bytes=10**8) as s:
        s.put("a", b"a" * 20_000, 0.5)
        s.put("b", b"b" * 20_000, 0.6)
        # SQLite's max_page_count makes the database "full" just like a full filesystem does:
        # the same SQLITE_FULL error ("database or disk is full").
        pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
        s._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(SpoolError, match="disk full") as info:
            s.put("c", b"c" * 50_000, 0.9)
        assert info.value.kind == "disk_full"
        assert str(path) in str(info.value)
        assert "max_bytes" in str(info.value)
        # Nothing changed, the earlier frames are intact.
        stats = s.stats()
        assert (stats.frames, stats.bytes, stats.errors_total) == (2, 40_000, 1)
        assert s.keys() == ["b", "a"]
        # Space freed inside the spool (an ack) is reused ...
        s.lease(1, 10**6)
        s.ack(["b"])
        assert s.put("c", b"c" * 15_000, 0.9).stored
        # ... and space freed on the disk lets big frames in again.
        s._conn.execute("PRAGMA max_page_count = 1073741823")
        assert s.put("d", b"d" * 200_000, 0.9).stored
        assert [e.payload[:1] for e in s.lease(10, 10**7)] == [b"c", b"d", b"a"]


def test_garbage_file_is_moved_aside_and_a_fresh_spool_started(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with Spool(path, max_bytes=1000) as s:
        stats = s.stats()
        assert stats.corrupt_recoveries_total == 1
        assert stats.frames == 0
        assert s.put("a", b"1", 0.1).stored
    moved = list(tmp_path.glob("s.db.corrupt-*"))
    assert len(moved) == 1
    assert moved[0].read_bytes().startswith(b"this is not a database")
    with Spool(path, max_bytes=1000) as s:  # the fresh spool is a good one
        assert s.stats().corrupt_recoveries_total == 0
        assert s.keys() == ["a"]


def test_corrupt_page_salvages_the_frames_that_are_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    keys = [f"frame-{i:03d}" for i in range(30)]
    with Spool(path, max_bytes=10**8) as s:
        for key in keys:
            s.put(key, payload_for(key), score_for(key))
    raw = bytearray(path.read_bytes())
    page = 4096
    pages = len(raw) // page
    victim = pages // 2
    raw[victim * page : (victim + 1) * page] = b"\xff" * page
    path.write_bytes(bytes(raw))
    with Spool(path, max_bytes=10**8) as s:
        stats = s.stats()
        assert stats.corrupt_recoveries_total == 1
        assert 0 < stats.salvaged_total < len(keys)
        entries = s.lease(100, 10**9)
    assert len(entries) == stats.salvaged_total
    for e in entries:
        assert e.payload == payload_for(e.frame_key)
        assert e.score == score_for(e.frame_key)
    moved = [p for p in tmp_path.glob("s.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(moved) == 1


# -- kill -9 ----------------------------------------------------------------------------------


def _read_log(path: Path) -> dict[str, set[str]]:
    tags: dict[str, set[str]] = {t: set() for t in "IPREaAL"}
    text = path.read_text() if path.exists() else ""
    for line in text.split("\n")[:-1]:  # a last line without newline was torn by the kill
        tag, key = line.split(" ", 1)
        tags[tag].add(key)
    return tags


def test_kill9_at_random_moments_leaves_whole_entries_and_no_acked_ones(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    rng = random.Random(1234)
    max_bytes = 600_000  # small enough that eviction runs in the loop too
    stored: set[str] = set()
    gone: set[str] = set()
    for round_no in range(6):
        log = tmp_path / f"child-{round_no}.log"
        args = [str(CHILD), "spool", str(db), str(log), str(max_bytes), f"r{round_no}", "1"]
        with subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as child:
            try:
                assert child.stdout is not None
                line = child.stdout.readline()
                assert line == b"ready\n", child.stderr.read() if child.stderr else b""
                time.sleep(rng.uniform(0.05, 0.6))
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        tags = _read_log(log)
        stored |= tags["P"]
        gone |= tags["A"] | tags["E"]
        # What the kill may have cut short: one put (which may have evicted lower-scored pending
        # frames) and one ack. Those frames may or may not be there; all others must be exact.
        cut_put = tags["I"] - tags["P"] - tags["R"]
        assert len(cut_put) <= 1
        floor = max((score_for(k) for k in cut_put), default=-1.0)
        maybe_gone = (tags["a"] - tags["A"]) | {k for k in stored - gone if score_for(k) < floor}

        raw = sqlite3.connect(db)
        try:
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            rows = raw.execute(
                "SELECT f.frame_key, f.nbytes, p.payload, f.score "
                "FROM frames AS f JOIN payloads AS p ON p.id = f.id"
            ).fetchall()
            counts = raw.execute(
                "SELECT (SELECT COUNT(*) FROM frames), (SELECT COUNT(*) FROM payloads)"
            ).fetchone()
            assert counts == (len(rows), len(rows)), "a frame without payload or vice versa"
        finally:
            raw.close()
        present = set()
        for key, nbytes, payload, score in rows:
            assert nbytes == len(payload)
            assert hashlib.sha256(payload).digest() == hashlib.sha256(payload_for(key)).digest()
            assert score == score_for(key)
            present.add(key)
        assert not present & gone, "an acknowledged or evicted frame came back"
        assert (stored - gone - maybe_gone) <= present, "a frame whose put returned was lost"
        gone |= (stored - gone) - present  # cut short this round: no longer expected

        with Spool(db, max_bytes=max_bytes) as s:
            assert s.keys("inflight") == []  # in flight at the kill: pending again
            stats = s.stats()
            assert stats.corrupt_recoveries_total == 0
            assert stats.bytes <= max_bytes
            assert stats.frames == len(present)
    assert len(stored) > 20, "the child did too little work for the test to mean anything"


def test_corruption_found_while_running_is_recovered_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    keys = [f"frame-{i:03d}" for i in range(60)]
    with Spool(path, max_bytes=10**8) as s:
        for key in keys:
            s.put(key, payload_for(key) * 3, score_for(key))
    with Spool(path, max_bytes=10**8) as s:  # passes its open-time check
        # Damage a page under the running spool (bigger than SQLite's page cache, so the
        # lease below reads it from the file).
        raw = bytearray(path.read_bytes())
        victim = len(raw) // 4096 // 2
        with path.open("r+b") as fh:
            fh.seek(victim * 4096)
            fh.write(b"\xff" * 4096)
        with pytest.raises(SpoolError, match="corrupt") as info:
            s.lease(100, 10**9)
        assert info.value.kind == "corrupt"
        stats = s.stats()
        assert stats.corrupt_recoveries_total == 1
        assert 0 < stats.salvaged_total < len(keys)
        entries = s.lease(100, 10**9)  # the fresh spool works, with what could be salvaged
        assert len(entries) == stats.salvaged_total
        for e in entries:
            assert e.payload == payload_for(e.frame_key) * 3
        assert s.put("new", b"1", 0.5).stored
    assert len([p for p in tmp_path.glob("s.db.corrupt-*") if p.name.endswith("Z")]) == 1


def test_reopening_with_a_smaller_bound_evicts_the_lowest_scored(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, max_bytes=1000) as s:
        for i in range(10):
            s.put(f"k{i}", b"x" * 100, i / 10)
    with Spool(path, max_bytes=350) as s:
        stats = s.stats()
        assert (stats.frames, stats.bytes, stats.evicted_total) == (3, 300, 7)
        assert s.keys() == ["k9", "k8", "k7"]


def test_held_frames_are_kept_out_of_leases_counted_and_evicted_first(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_bytes=300) as spool:
        spool.put("top", b"t" * 100, 0.9)
        spool.put("mid", b"m" * 100, 0.5)
        assert [e.frame_key for e in spool.lease(1, 1000)] == ["top"]
        assert spool.hold({"top": "MessageSizeTooLargeError"}) == 1
        assert [e.frame_key for e in spool.lease(5, 1000)] == ["mid"]
        spool.nack(["mid"])
        stats = spool.stats()
        assert (stats.frames, stats.pending, stats.inflight, stats.held) == (2, 1, 0, 1)
        assert stats.held_total == 1
        # full: the held frame goes first, though it scores highest
        result = spool.put("new", b"n" * 150, 0.1)
        assert result.evicted_keys == ("top",)
        assert spool.keys("held") == []
    with Spool(tmp_path / "s.db", max_bytes=300) as spool:
        spool.put("x", b"x", 0.7)
        [entry] = spool.lease(1, 1000)
        spool.hold({entry.frame_key: "TopicAuthorizationFailedError"})
    with Spool(tmp_path / "s.db", max_bytes=300) as spool:  # held survives a restart
        assert spool.keys("held") == ["x"]
        retry = spool.lease_held()
        assert retry is not None
        assert retry.frame_key == "x"
        assert retry.attempts == 1
        assert spool.lease_held() is None
        spool.nack(["x"])
        [entry] = [e for e in spool.lease(5, 1000) if e.frame_key == "x"]
        spool.hold({"x": "MessageSizeTooLargeError"})
        assert spool.release_held() == 1
        assert "x" in spool.keys("pending")


def test_a_version_1_spool_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE frames (id INTEGER PRIMARY KEY, frame_key TEXT NOT NULL UNIQUE,
            score REAL NOT NULL, nbytes INTEGER NOT NULL, created_ns INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'inflight')),
            attempts INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE payloads (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
        INSERT INTO frames VALUES (1, 'k1', 0.5, 3, 1, 'inflight', 2);
        INSERT INTO payloads VALUES (1, X'616263');
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    with Spool(path, max_bytes=1 << 20) as spool:
        [entry] = spool.lease(1, 100)
        assert (entry.frame_key, entry.payload, entry.attempts) == ("k1", b"abc", 2)
        assert spool.hold({"k1": "MessageSizeTooLargeError"}) == 1
        assert spool.stats().held == 1


def test_a_key_collision_with_different_content_is_a_conflict_not_a_duplicate(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    assert spool.put("v/d/000001", b"first drive", 0.5, content_digest="aa" * 16).stored
    # the same frame again (re-delivered after a crash, scored anew): a duplicate
    again = spool.put("v/d/000001", b"first drive, rescored", 0.7, content_digest="aa" * 16)
    assert again.status == "duplicate"
    # another frame claiming the same key: an error, logged, never a silent duplicate
    with caplog.at_level("ERROR", logger="edge_agent.spool"):
        other = spool.put("v/d/000001", b"second drive", 0.9, content_digest="bb" * 16)
    assert other.status == "conflict"
    assert not other.stored
    assert "v/d/000001" in other.reason
    assert any("different content" in r.getMessage() for r in caplog.records)
    [entry] = spool.lease(5, 1000)
    assert entry.payload == b"first drive"  # the spooled frame is untouched
    stats = spool.stats()
    assert (stats.frames, stats.duplicate_total) == (1, 1)


def test_a_spool_from_before_the_content_digest_opens_and_compares_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE frames (
            id INTEGER PRIMARY KEY, frame_key TEXT NOT NULL UNIQUE, score REAL NOT NULL,
            nbytes INTEGER NOT NULL, created_ns INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'inflight')),
            attempts INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE payloads (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
        INSERT INTO frames (id, frame_key, score, nbytes, created_ns) VALUES (1, 'old', 0.5, 3, 1);
        INSERT INTO payloads (id, payload) VALUES (1, x'010203');
        """
    )
    conn.close()
    with Spool(path, max_bytes=1000) as s:
        assert s.put("old", b"xyz", 0.5, content_digest="cc" * 16).status == "duplicate"
        assert s.put("new", b"abc", 0.5, content_digest="dd" * 16).stored
        assert s.put("new", b"abd", 0.5, content_digest="ee" * 16).status == "conflict"
        assert sorted(s.keys()) == ["new", "old"]
