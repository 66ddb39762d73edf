"""Chunking: every chunk fits, any arrival order reassembles byte-identical, errors are named."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from schemas.chunking import (
    CHUNK_HEADER_SIZE,
    Chunk,
    Reassembler,
    chunk_overhead,
    decode_chunk,
    encode_chunk,
    split_payload,
)
from schemas.errors import (
    ChecksumMismatchError,
    ChunkDecodeError,
    ChunkError,
    ChunkMismatchError,
    DecodeError,
    DuplicateChunkError,
    FrameTooLargeError,
    SchemaError,
    ValidationError,
)

KEY = "veh-1/drive-7/000042"
Quarantined = list[tuple[str, str, list[Chunk]]]


def _reassembler(
    quarantined: Quarantined | None = None,
    *,
    max_frame: int = 1 << 20,
    max_inflight: int = 4 << 20,
    timeout_s: float = 10.0,
) -> Reassembler:
    hook = None if quarantined is None else lambda k, r, c: quarantined.append((k, r, c))
    return Reassembler(
        max_frame_bytes=max_frame,
        max_inflight_bytes=max_inflight,
        timeout_s=timeout_s,
        on_quarantine=hook,
    )


def _payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(
        st.one_of(st.integers(0, 5000), st.sampled_from([0, 1, 100, 200, 300, 1000])),
        min_size=1,
        max_size=5,
    ),
    max_message=st.integers(CHUNK_HEADER_SIZE + 32, 1200),
    exact_multiple=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_shuffled_interleaved_frames_reassemble_identically(
    sizes: list[int], max_message: int, exact_multiple: bool, seed: int
) -> None:
    rng = random.Random(seed)
    frames: dict[str, bytes] = {}
    encoded: list[bytes] = []
    for i, size in enumerate(sizes):
        key = f"veh-{i}/drive/{i:06d}"
        room = max_message - chunk_overhead(key)
        if exact_multiple:
            size = room * (size % 5)  # 0, 1, 2, 3 or 4 whole chunks
        frames[key] = rng.randbytes(size)
        chunks = split_payload(key, frames[key], max_message)
        assert all(len(c) <= max_message for c in chunks)
        assert len(chunks) == max(1, -(-size // room))
        encoded.extend(chunks)
    rng.shuffle(encoded)
    r = _reassembler()
    done: dict[str, bytes] = {}
    for raw in encoded:
        out = r.add(raw, now=0.0)
        if out is not None:
            key = decode_chunk(raw).frame_key
            assert key not in done
            done[key] = out
    assert done == frames
    assert r.inflight_frames == 0
    assert r.inflight_bytes == 0
    assert r.pending_keys() == []


def test_small_payload_is_one_chunk_and_empty_payload_works() -> None:
    for payload in (b"", b"abc"):
        (raw,) = split_payload(KEY, payload, 1_000_000)
        chunk = decode_chunk(raw)
        assert (chunk.index, chunk.count, chunk.total_size) == (0, 1, len(payload))
        assert chunk.sha256 == hashlib.sha256(payload).digest()
        assert _reassembler().add(raw, now=0.0) == payload


def test_encode_decode_chunk_round_trip_and_accepts_buffers() -> None:
    data = b"\x00\x01payload"
    chunk = Chunk(KEY, 1, 3, 100, hashlib.sha256(b"whole").digest(), data)
    raw = encode_chunk(chunk)
    assert len(raw) == CHUNK_HEADER_SIZE + len(KEY) + len(data)
    assert decode_chunk(raw) == chunk
    assert decode_chunk(memoryview(raw)) == chunk
    assert decode_chunk(bytearray(raw)) == chunk


def test_unicode_key_round_trips() -> None:
    key = "véhicule-ü/drive/000001"
    (raw,) = split_payload(key, b"abc", 500)
    assert decode_chunk(raw).frame_key == key


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: b"", "bad magic|truncated"),
        (lambda raw: raw[:10], "truncated"),
        (lambda raw: b"XYZ" + raw[3:], "bad magic"),
        (lambda raw: raw[:3] + b"\x09" + raw[4:], "unsupported chunk format version 9"),
        (lambda raw: raw[:20] + bytes([raw[20] ^ 0xFF]) + raw[21:], "crc32"),
        (lambda raw: raw[:-1], "truncated"),
        (lambda raw: raw + b"!", "trailing bytes"),
        (lambda raw: _payload(300, 5), "bad magic"),
    ],
)
def test_garbage_is_a_chunk_decode_error(mutate: object, message: str) -> None:
    (raw,) = split_payload(KEY, b"some payload bytes", 1000)
    assert callable(mutate)
    with pytest.raises(ChunkDecodeError, match=message) as info:
        decode_chunk(mutate(raw))
    assert isinstance(info.value, ChunkError)
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, SchemaError)
    with pytest.raises(ChunkDecodeError):
        _reassembler().add(mutate(raw), now=0.0)


def test_encode_chunk_validates() -> None:
    sha = bytes(32)
    with pytest.raises(ValidationError, match="frame_key"):
        encode_chunk(Chunk("", 0, 1, 0, sha, b""))
    with pytest.raises(ValidationError, match="sha256"):
        encode_chunk(Chunk(KEY, 0, 1, 0, b"short", b""))
    with pytest.raises(ValidationError, match="index"):
        encode_chunk(Chunk(KEY, 2, 2, 10, sha, b""))
    with pytest.raises(ValidationError, match="count"):
        encode_chunk(Chunk(KEY, 0, 0, 10, sha, b""))
    with pytest.raises(ValidationError, match="total_size"):
        encode_chunk(Chunk(KEY, 0, 1, 2, sha, b"abc"))


def test_split_refuses_a_max_size_without_room_for_data() -> None:
    with pytest.raises(ValidationError, match="max_message_bytes"):
        split_payload(KEY, b"abc", chunk_overhead(KEY))
    assert len(split_payload(KEY, b"abc", chunk_overhead(KEY) + 1)) == 3


def test_duplicate_chunk_is_harmless() -> None:
    payload = _payload(1000)
    chunks = split_payload(KEY, payload, 300)
    r = _reassembler()
    assert r.add(chunks[0], now=0.0) is None
    held = r.inflight_bytes
    with pytest.raises(DuplicateChunkError, match="duplicate chunk 0/") as info:
        r.add(chunks[0], now=1.0)
    assert info.value.frame_key == KEY
    assert (r.inflight_frames, r.inflight_bytes) == (1, held)
    out = None
    for raw in chunks[1:]:
        out = r.add(raw, now=2.0)
    assert out == payload


def test_chunk_of_another_payload_under_same_key_is_a_mismatch() -> None:
    first = split_payload(KEY, _payload(1000, 1), 300)
    other = split_payload(KEY, _payload(1000, 2), 300)
    shorter = split_payload(KEY, _payload(900, 1), 300)
    r = _reassembler()
    r.add(first[0], now=0.0)
    with pytest.raises(ChunkMismatchError, match="sha256") as info:
        r.add(other[1], now=0.0)
    assert info.value.frame_key == KEY
    with pytest.raises(ChunkMismatchError, match="total_size"):
        r.add(shorter[1], now=0.0)
    assert r.inflight_frames == 1
    out = None
    for raw in first[1:]:
        out = r.add(raw, now=0.0)
    assert out == _payload(1000, 1)


def test_oversized_chunk_data_is_a_mismatch_not_stored() -> None:
    sha = hashlib.sha256(b"x" * 10).digest()
    r = _reassembler()
    r.add(Chunk(KEY, 0, 3, 10, sha, b"x" * 6), now=0.0)
    with pytest.raises(ChunkMismatchError, match="manifest says 10"):
        r.add(Chunk(KEY, 1, 3, 10, sha, b"x" * 6), now=0.0)
    assert r.inflight_bytes == 6


def test_bad_checksum_quarantines_the_frame() -> None:
    quarantined: Quarantined = []
    payload = _payload(1000)
    chunks = [decode_chunk(c) for c in split_payload(KEY, payload, 400)]
    bad = Chunk(KEY, 1, len(chunks), 1000, chunks[1].sha256, b"\x00" * len(chunks[1].data))
    r = _reassembler(quarantined)
    r.add(bad, now=0.0)
    for c in chunks[2:]:
        r.add(c, now=0.0)
    with pytest.raises(ChecksumMismatchError, match="quarantined") as info:
        r.add(chunks[0], now=0.0)
    assert info.value.frame_key == KEY
    assert r.inflight_frames == 0
    assert r.inflight_bytes == 0
    ((key, reason, held),) = quarantined
    assert (key, reason) == (KEY, "checksum")
    assert [c.index for c in held] == list(range(len(chunks)))
    # the good copy, redelivered, still goes through
    out = None
    for c in chunks:
        out = r.add(c, now=1.0)
    assert out == payload


def test_bad_checksum_single_chunk() -> None:
    quarantined: Quarantined = []
    r = _reassembler(quarantined)
    with pytest.raises(ChecksumMismatchError):
        r.add(Chunk(KEY, 0, 1, 3, bytes(32), b"abc"), now=0.0)
    assert [(k, reason) for k, reason, _ in quarantined] == [(KEY, "checksum")]


def test_frame_too_large_is_refused_and_not_held() -> None:
    r = _reassembler(max_frame=1000, max_inflight=5000)
    chunks = split_payload(KEY, _payload(1001), 300)
    with pytest.raises(FrameTooLargeError, match=r"1001 bytes.*at most 1000") as info:
        r.add(chunks[0], now=0.0)
    assert info.value.frame_key == KEY
    assert r.inflight_frames == 0
    (small,) = split_payload("k/d/000001", _payload(1000), 2000)
    assert r.add(small, now=0.0) == _payload(1000)


def test_timeout_quarantines_incomplete_frames_with_fake_clock() -> None:
    quarantined: Quarantined = []
    r = _reassembler(quarantined, timeout_s=5.0)
    a = split_payload("v/d/000001", _payload(900, 1), 400)
    b = split_payload("v/d/000002", _payload(900, 2), 400)
    r.add(a[0], now=100.0)
    r.add(a[1], now=101.0)
    r.add(b[0], now=103.0)
    assert r.expire(now=105.0) == []  # exactly timeout_s old is not yet expired
    assert r.expire(now=105.5) == ["v/d/000001"]
    assert r.pending_keys() == ["v/d/000002"]
    ((key, reason, held),) = quarantined
    assert (key, reason, [c.index for c in held]) == ("v/d/000001", "timeout", [0, 1])
    assert r.inflight_bytes == len(decode_chunk(b[0]).data)
    # the rest of b completes before its deadline; a late chunk of a starts afresh
    r.add(b[1], now=107.0)
    assert r.add(b[2], now=107.5) == _payload(900, 2)
    assert r.add(a[2], now=108.0) is None
    assert r.expire(now=200.0) == ["v/d/000001"]
    assert r.inflight_frames == 0


def test_memory_bound_quarantines_oldest_incomplete_frames() -> None:
    quarantined: Quarantined = []
    r = _reassembler(quarantined, max_frame=1000, max_inflight=1400)
    frames = {f"v/d/{i:06d}": _payload(1000, i) for i in range(3)}
    split = {k: split_payload(k, p, 300 + chunk_overhead(k)) for k, p in frames.items()}
    keys = list(frames)
    # 2 chunks each of frames 0 and 1 (1200 bytes), then frame 2 needs room
    for k in keys[:2]:
        r.add(split[k][0], now=0.0)
        r.add(split[k][1], now=0.0)
    assert r.inflight_bytes == 1200
    r.add(split[keys[2]][0], now=1.0)
    assert [(k, reason) for k, reason, _ in quarantined] == [(keys[0], "memory")]
    assert r.pending_keys() == [keys[1], keys[2]]
    assert r.inflight_bytes == 900
    assert r.inflight_bytes <= 1400
    # a chunk that completes its frame needs no room and evicts nothing
    r.add(split[keys[1]][2], now=1.0)
    assert r.add(split[keys[1]][3], now=1.0) == frames[keys[1]]
    assert len(quarantined) == 1
    # the newest frame grows to its full size, evicting nothing else needed
    for raw in split[keys[2]][1:3]:
        r.add(raw, now=2.0)
    assert r.add(split[keys[2]][3], now=2.0) == frames[keys[2]]
    assert r.inflight_bytes == 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_inflight=st.integers(1000, 4000))
def test_memory_bound_always_holds(seed: int, max_inflight: int) -> None:
    rng = random.Random(seed)
    quarantined: Quarantined = []
    r = _reassembler(quarantined, max_frame=1000, max_inflight=max_inflight)
    encoded: list[bytes] = []
    frames = {}
    for i in range(8):
        key = f"v/d/{i:06d}"
        frames[key] = rng.randbytes(rng.randint(0, 1000))
        encoded.extend(split_payload(key, frames[key], rng.randint(100, 600)))
    rng.shuffle(encoded)
    done = {}
    for raw in encoded:
        key = decode_chunk(raw).frame_key
        try:
            out = r.add(raw, now=0.0)
        except DuplicateChunkError:
            continue  # a late chunk of a frame that was evicted and restarted
        assert r.inflight_bytes <= max_inflight
        if out is not None:
            assert out == frames[key]
            done[key] = out
    lost = {k for k, _, _ in quarantined}
    assert all(reason == "memory" for _, reason, _ in quarantined)
    assert set(done) | lost | set(r.pending_keys()) == set(frames)


def test_constructor_rejects_inconsistent_limits() -> None:
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        Reassembler(max_frame_bytes=100, max_inflight_bytes=99, timeout_s=1.0)
    with pytest.raises(ValueError, match="timeout_s"):
        Reassembler(max_frame_bytes=100, max_inflight_bytes=100, timeout_s=0.0)


def test_twenty_megabyte_payload_under_one_megabyte_messages() -> None:
    payload = _payload(20 * 1024 * 1024 + 17, 9)
    chunks = split_payload(KEY, payload, 1_000_000)
    assert len(chunks) == 21
    assert all(len(c) <= 1_000_000 for c in chunks)
    r = _reassembler(max_frame=32 << 20, max_inflight=64 << 20)
    outs = [r.add(c, now=0.0) for c in reversed(chunks)]
    assert outs[-1] == payload
    assert outs[:-1] == [None] * 20


class ReassemblerMachine(RuleBasedStateMachine):
    """Random frames, chunks sent in random order, resent, and a clock that jumps.

    Whatever happens: memory stays bounded, every payload returned is byte-identical to what was
    split, and a frame whose chunks all arrived is either returned or was quarantined (it is
    never silently lost).
    """

    MAX_FRAME = 1200
    MAX_INFLIGHT = 1500
    TIMEOUT = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.quarantined: Quarantined = []
        self.r = _reassembler(
            self.quarantined,
            max_frame=self.MAX_FRAME,
            max_inflight=self.MAX_INFLIGHT,
            timeout_s=self.TIMEOUT,
        )
        self.now = 0.0
        self.frames: dict[str, bytes] = {}
        self.unsent: dict[str, list[bytes]] = {}
        self.sent: list[bytes] = []
        self.completed: set[str] = set()

    @rule(size=st.integers(0, MAX_FRAME), max_message=st.integers(120, 800), data=st.data())
    def new_frame(self, size: int, max_message: int, data: st.DataObject) -> None:
        key = f"veh/drive/{len(self.frames):06d}"
        self.frames[key] = random.Random(len(self.frames)).randbytes(size)
        chunks = split_payload(key, self.frames[key], max_message)
        self.unsent[key] = list(data.draw(st.permutations(chunks)))

    @precondition(lambda self: any(self.unsent.values()))
    @rule(data=st.data())
    def send_next_chunk(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, v in self.unsent.items() if v)))
        raw = self.unsent[key].pop()
        self.sent.append(raw)
        self._add(key, raw)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def resend_a_chunk(self, data: st.DataObject) -> None:
        raw = data.draw(st.sampled_from(self.sent))
        self._add(decode_chunk(raw).frame_key, raw)

    @rule(dt=st.floats(0.0, 3.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        before = len(self.quarantined)
        expired = self.r.expire(self.now)
        assert [k for k, reason, _ in self.quarantined[before:]] == expired
        assert all(reason == "timeout" for _, reason, _ in self.quarantined[before:])

    def _add(self, key: str, raw: bytes) -> None:
        before = len(self.quarantined)
        try:
            out = self.r.add(raw, now=self.now)
        except DuplicateChunkError:
            event("duplicate")
            return
        finally:
            if len(self.quarantined) > before:
                event("memory quarantine")
        if out is not None:
            assert out == self.frames[key]
            self.completed.add(key)

    @invariant()
    def memory_is_bounded(self) -> None:
        assert 0 <= self.r.inflight_bytes <= self.MAX_INFLIGHT
        assert self.r.inflight_frames == len(self.r.pending_keys())
        if not self.r.inflight_frames:
            assert self.r.inflight_bytes == 0

    @invariant()
    def quarantine_reports_are_well_formed(self) -> None:
        for key, reason, chunks in self.quarantined:
            assert reason in {"timeout", "memory"}
            assert [c.index for c in chunks] == sorted({c.index for c in chunks})
            assert all(c.frame_key == key for c in chunks)

    @invariant()
    def no_frame_is_lost(self) -> None:
        lost = {k for k, _, _ in self.quarantined}
        for key, left in self.unsent.items():
            if not left:
                assert key in self.completed or key in lost


ReassemblerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None
)
test_reassembler_state_machine = ReassemblerMachine.TestCase
