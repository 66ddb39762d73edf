"""S3BlobStore against a real S3 HTTP endpoint on loopback (moto's server), through boto3.

The store talks S3 over HTTP to :class:`moto.server.ThreadedMotoServer`, started once for the
module; the test's own boto3 client plays the operator (creates buckets, damages objects).
Real data: nuScenes camera JPEGs and a LiDAR sweep. Failures are provoked for real: a bucket
that does not exist, a port nobody listens on, a server that accepts and never answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from deploy.kafka.broker import LocalKafka
from ingest_service.blobstore import (
    BlobRef,
    S3BlobStore,
    blob_store_spec,
    open_blob_store,
    open_blob_store_spec,
)
from ingest_service.config import IngestConfig, S3Section
from ingest_service.errors import (
    BlobBucketNotFoundError,
    BlobCorruptError,
    BlobNotFound,
    BlobStoreError,
    BlobStoreUnavailableError,
)
from ingest_service.queue import LabelQueue
from tests.integration.ingest_child import DATA, frame_records, make_envelope, producer, send
from tests.integration.test_ingest_consumer import Running, make_config, task_count, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "fleet-blobs-it"
KEY_ID = "AKIDFLEETTEST"
SECRET = "s3-secret-that-must-never-be-printed"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, with the bucket the tests use."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    admin_client(url).create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


def admin_client(url: str) -> Any:
    """The operator's own client: not the code under test."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "path"}),
    )


def settings(url: str, **overrides: Any) -> S3Section:
    values: dict[str, Any] = {
        "endpoint_url": url,
        "bucket": BUCKET,
        "prefix": f"it/{uuid.uuid4().hex[:12]}",
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 5.0,
        "max_attempts": 2,
    }
    return S3Section(**(values | overrides))


@pytest.fixture
def store(endpoint: str) -> Iterator[S3BlobStore]:
    s = S3BlobStore(settings(endpoint))
    yield s
    s.close()


def count_calls(store: S3BlobStore, operation: str) -> list[str]:
    """A list that grows by one for every ``operation`` request the store's client sends."""
    calls: list[str] = []
    store.client.meta.events.register(
        f"before-call.s3.{operation}", lambda **kw: calls.append(operation)
    )
    return calls


def assert_no_credentials(exc: BaseException) -> None:
    text = str(exc)
    assert SECRET not in text
    assert KEY_ID not in text


def sample_blobs() -> dict[str, bytes]:
    jpeg = next(iter(sorted(DATA.glob("*CAM_FRONT__*.jpg"))))
    (lidar,) = DATA.glob("*LIDAR_TOP*.pcd.bin")
    return {"jpeg": jpeg.read_bytes(), "lidar": lidar.read_bytes()}


# --- the store ---------------------------------------------------------------------------------


def test_real_sensor_data_round_trips_under_its_content_address(
    store: S3BlobStore, endpoint: str
) -> None:
    admin = admin_client(endpoint)
    for name, data in sample_blobs().items():
        assert len(data) > 100_000, name
        ref = store.put(data)
        assert ref == BlobRef.of(data)
        sha = ref.sha256
        key = f"{store.prefix}/{sha[:2]}/{sha[2:4]}/{sha}"
        assert store.key_for(ref) == key
        head = admin.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == len(data)
        assert store.exists(ref)
        assert store.get(ref) == data
        assert store.delete(ref) is True
        assert not store.exists(ref)
        assert store.delete(ref) is False
        with pytest.raises(BlobNotFound, match=f"{sha}.*s3://{BUCKET}/{key}"):
            store.get(ref)
    empty = store.put(b"")
    assert store.get(empty) == b""


def test_a_second_put_uploads_nothing_and_a_wrong_size_object_is_rewritten(
    store: S3BlobStore, endpoint: str
) -> None:
    data = sample_blobs()["jpeg"]
    puts = count_calls(store, "PutObject")
    ref = store.put(data)
    key = store.key_for(ref)
    admin = admin_client(endpoint)
    first = admin.head_object(Bucket=BUCKET, Key=key)
    for _ in range(3):
        assert store.put(data) == ref
    assert len(puts) == 1, "a blob already stored must not be uploaded again"
    assert admin.head_object(Bucket=BUCKET, Key=key)["ETag"] == first["ETag"]

    admin.put_object(Bucket=BUCKET, Key=key, Body=data[: len(data) // 2])  # a truncated upload
    assert store.put(data) == ref
    assert len(puts) == 2
    assert store.get(ref) == data


def test_a_damaged_object_is_detected_on_get(store: S3BlobStore, endpoint: str) -> None:
    data = sample_blobs()["lidar"]
    ref = store.put(data)
    key = store.key_for(ref)
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01  # one flipped bit, same size
    admin_client(endpoint).put_object(Bucket=BUCKET, Key=key, Body=bytes(damaged))
    with pytest.raises(BlobCorruptError) as info:
        store.get(ref)
    assert f"s3://{BUCKET}/{key}" in str(info.value)
    assert info.value.expected == ref.sha256
    assert info.value.actual == BlobRef.of(bytes(damaged)).sha256
    assert "re-ingest" in str(info.value)


def test_a_missing_bucket_is_named_and_never_taken_for_a_missing_blob(endpoint: str) -> None:
    s = S3BlobStore(settings(endpoint, bucket="no-such-bucket-here"))
    ref = BlobRef.of(b"payload")
    try:
        for call in (lambda: s.put(b"payload"), lambda: s.exists(ref), lambda: s.get(ref), s.check):
            with pytest.raises(BlobBucketNotFoundError) as info:
                call()
            message = str(info.value)
            assert "no-such-bucket-here" in message
            assert endpoint in message
            assert "Create it" in message
            assert_no_credentials(info.value)
    finally:
        s.close()


def test_check_writes_reads_and_deletes_a_probe(store: S3BlobStore, endpoint: str) -> None:
    report = store.check()
    assert f"s3://{BUCKET}/{store.prefix}" in report
    listed = admin_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=store.prefix)
    assert listed.get("KeyCount", 0) == 0, "the probe object must be deleted"


@contextlib.contextmanager
def refusing_endpoint() -> Iterator[str]:
    """An endpoint URL whose port refuses connections for as long as the block runs.

    The port stays bound (never listening): nobody else can take it meanwhile, and a client
    cannot connect to itself through it (the ephemeral-port self-connect of a free port).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_an_endpoint_nobody_listens_on_fails_fast_and_says_so() -> None:
    with refusing_endpoint() as url:
        s = S3BlobStore(settings(url, max_attempts=2))
        start = time.monotonic()
        try:
            with pytest.raises(BlobStoreUnavailableError) as info:
                s.put(b"frame bytes")
        finally:
            s.close()
    elapsed = time.monotonic() - start
    assert elapsed < 10.0, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert url in message
    assert "unreachable after 2 attempts" in message
    assert "endpoint_url" in message
    assert_no_credentials(info.value)


def test_an_endpoint_that_never_answers_times_out_within_the_bound() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts connections; nobody ever reads or answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    s = S3BlobStore(settings(url, read_timeout_s=0.5, max_attempts=2))
    start = time.monotonic()
    try:
        with pytest.raises(BlobStoreUnavailableError) as info:
            s.get(BlobRef.of(b"anything"))
    finally:
        s.close()
        silent.close()
    elapsed = time.monotonic() - start
    # two attempts of 0.5 s plus botocore's backoff between them
    assert elapsed < 8.0, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert url in message
    assert "did not answer within 0.5 s" in message
    assert_no_credentials(info.value)


def test_ingest_service_check_probes_the_bucket_with_credentials_from_the_aws_environment(
    endpoint: str, tmp_path: Path
) -> None:
    def check(bucket: str) -> subprocess.Popen[str]:
        config = tmp_path / f"{bucket}.toml"
        config.write_text(
            f'[queue]\ndatabase = "{tmp_path / "queue.db"}"\n[api]\nenabled = false\n'
            f'[blobs]\nbackend = "s3"\n[blobs.s3]\nendpoint_url = "{endpoint}"\n'
            f'bucket = "{bucket}"\nprefix = "check"\nmax_attempts = 1\n'
            '[kafka]\nbootstrap_servers = ["127.0.0.1:1"]\n'
        )
        return subprocess.Popen(
            [sys.executable, "-m", "ingest_service.cli", "check", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={
                "PATH": "/usr/bin:/bin",
                "AWS_ACCESS_KEY_ID": KEY_ID,
                "AWS_SECRET_ACCESS_KEY": SECRET,
                "PYTHONWARNINGS": "ignore::DeprecationWarning",
            },
        )

    # both at once: each spends ~5 s finding that the broker at 127.0.0.1:1 is not there
    procs = {"ok": check(BUCKET), "missing": check("not-a-bucket")}
    out: dict[str, tuple[int, str, str]] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        out[name] = (proc.returncode, stdout, stderr)
    _, stdout, stderr = out["ok"]
    assert f"blob store: bucket s3://{BUCKET}/check at {endpoint} is writable" in stdout, (
        stdout + stderr
    )
    code, stdout, stderr = out["missing"]
    assert code == 1
    assert "bucket 'not-a-bucket' does not exist" in stderr, stdout + stderr
    for _, stdout, stderr in out.values():
        assert SECRET not in stdout + stderr


# --- the ingest consumer with the s3 backend -----------------------------------------------------


def s3_config(kafka: LocalKafka, topic: str, database: str, endpoint: str) -> IngestConfig:
    cfg = make_config(kafka, topic, database, Path("/nonexistent-local-root"))
    blobs = dataclasses.replace(cfg.blobs, backend="s3", s3=settings(endpoint, prefix=topic))
    return dataclasses.replace(cfg, blobs=blobs)


def test_the_consumer_stores_blobs_in_s3_and_queues_one_task_per_frame(
    kafka: LocalKafka, topic: str, endpoint: str, tmp_path: Path
) -> None:
    database = str(tmp_path / "queue.db")
    cfg = s3_config(kafka, topic, database, endpoint)
    kafka.create_topic(cfg.kafka.dlq, partitions=1)
    envelopes = [make_envelope(seq, drive="drive-s3") for seq in range(4)]
    prod = producer(kafka.bootstrap)
    try:
        records = [r for env in envelopes for r in frame_records(env)]
        send(prod, topic, records)
        send(prod, topic, records)  # every frame twice: a vehicle re-sending after a crash
    finally:
        prod.close(timeout=30)

    running = Running(cfg)
    try:
        assert isinstance(running.consumer.blobs, S3BlobStore)
        wait_for("4 tasks", lambda: task_count(database) >= 4, running)
        wait_for(
            "every duplicate seen",
            lambda: (
                running.consumer.counts["ingested"] + running.consumer.counts["duplicates"] >= 8
            ),
            running,
        )
    finally:
        running.stop()
    assert task_count(database) == 4, "exactly one task per frame"
    assert running.consumer.counts["ingested"] == 4

    blobs = open_blob_store(cfg)
    assert isinstance(blobs, S3BlobStore)
    with LabelQueue.open(database) as q:
        for env in envelopes:
            refs: dict[str, BlobRef] = dict(q.get_frame(env.key).blob_refs)
            assert env.lidar is not None
            assert blobs.get(refs["lidar"]) == env.lidar.data
            for cam in env.cameras:
                assert blobs.get(refs[f"camera/{cam.name}"]) == cam.data
            assert blobs.exists(refs["envelope"])
    # the same six images and sweep in every frame are stored once; one envelope per frame
    listed = admin_client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=f"{topic}/")
    assert listed["KeyCount"] == len(envelopes[0].cameras) + 1 + len(envelopes)
    blobs.close()


def test_a_store_outage_is_retried_and_no_frame_is_lost(
    kafka: LocalKafka, topic: str, endpoint: str, tmp_path: Path
) -> None:
    """Blobs to a dead endpoint: the consumer retries, commits nothing, and ingests after."""
    database = str(tmp_path / "queue.db")
    cfg = s3_config(kafka, topic, database, endpoint)
    good = open_blob_store(cfg)
    assert isinstance(good, S3BlobStore)
    with refusing_endpoint() as dead_url:
        dead = dataclasses.replace(cfg.blobs.s3, endpoint_url=dead_url, max_attempts=1)
        running = Running(dataclasses.replace(cfg, blobs=dataclasses.replace(cfg.blobs, s3=dead)))
        prod = producer(kafka.bootstrap)
        try:
            send(prod, topic, [r for s in range(2) for r in frame_records(make_envelope(s))])
            wait_for(
                "two failed blob writes",
                lambda: (
                    running.metric(
                        "fleetal_ingest_store_retries_total", error="BlobStoreUnavailableError"
                    )
                    >= 2
                ),
                running,
            )
            assert task_count(database) == 0
            assert running.consumer.health()[0] is False
            running.consumer.blobs = good  # the endpoint is back
            wait_for("both frames", lambda: task_count(database) == 2, running)
        finally:
            prod.close(timeout=30)
            running.stop()
    good.close()


def test_blob_store_errors_are_blob_store_errors() -> None:
    for cls in (BlobBucketNotFoundError, BlobStoreUnavailableError, BlobCorruptError, BlobNotFound):
        assert issubclass(cls, BlobStoreError)


def test_a_trainer_opens_the_same_store_from_its_job_spec_and_its_own_credentials(
    store: S3BlobStore, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """job.json's ``blobs`` names the bucket, never the keys: the trainer's environment gives
    those (``FLEETAL_BLOBS__S3__*``), as it gives the service's."""
    data = next(iter(sorted(DATA.glob("*CAM_FRONT__*.jpg")))).read_bytes()
    ref = store.put(data)
    s3 = dataclasses.replace(store.settings, access_key_id="", secret_access_key="")
    spec = blob_store_spec(
        IngestConfig(blobs=dataclasses.replace(IngestConfig().blobs, backend="s3", s3=s3))
    )
    assert spec["bucket"] == BUCKET
    assert spec["endpoint_url"] == endpoint
    assert KEY_ID not in str(spec)
    assert SECRET not in str(spec)
    monkeypatch.setenv("FLEETAL_BLOBS__S3__ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("FLEETAL_BLOBS__S3__SECRET_ACCESS_KEY", SECRET)
    trainer_side = open_blob_store_spec(spec)
    try:
        assert isinstance(trainer_side, S3BlobStore)
        assert trainer_side.get(ref) == data
    finally:
        trainer_side.close()
