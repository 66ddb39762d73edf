"""Setting up Kafka: the jar cache and the Java / Maven checks of deploy/kafka/broker.py.

No Kafka client is involved here (the broker's own behaviour is tested with real clients in
test_kafka_broker.py); the patches below stand in for a PATH without java or mvn and prove
that a complete cache starts no process at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.kafka import broker as broker_mod
from deploy.kafka.broker import KafkaSetupError, LocalKafka, check_java, ensure_jars


@pytest.mark.integration
def test_ensure_jars_is_a_no_op_once_cached(
    kafka: LocalKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = ensure_jars()  # the session's broker already fetched them
    assert libs == kafka.libs
    marker = libs / broker_mod.MARKER_NAME
    mtime = marker.stat().st_mtime_ns

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"ensure_jars started a process on a complete cache: {args}")

    monkeypatch.setattr(broker_mod.subprocess, "run", no_subprocess)
    monkeypatch.setenv("PATH", "")  # neither mvn nor java could be found either
    started = time.monotonic()
    assert ensure_jars() == libs
    assert time.monotonic() - started < 1.0
    assert marker.stat().st_mtime_ns == mtime


@pytest.mark.integration
def test_ensure_jars_fills_an_empty_cache_atomically(
    kafka: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mvn resolves from ~/.m2, which the session's broker has just filled: no download here.
    libs = tmp_path / "cache" / "libs"
    try:
        assert ensure_jars(libs) == libs.resolve()
        assert (libs / broker_mod.MARKER_NAME).is_file()
        assert any(libs.glob(f"kafka_2.13-{broker_mod.KAFKA_VERSION}.jar"))
        assert any(libs.glob("slf4j-api-2.*.jar")), "slf4j 1.x would log nothing (NOP logger)"
        leftovers = [p.name for p in libs.parent.iterdir() if p.name not in {"libs", ".libs.lock"}]
        assert leftovers == [], "the staging directory was not cleaned up"
        monkeypatch.setenv("PATH", "")
        assert ensure_jars(libs) == libs.resolve()
    finally:
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # 40+ MB


def test_missing_java_or_maven_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaSetupError, match="openjdk-17-jre-headless maven"):
        ensure_jars(tmp_path / "libs")
    assert not (tmp_path / "libs").exists()


def test_java_older_than_17_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert broker_mod.java_major_version() == 11
    with pytest.raises(KafkaSetupError, match="Java 17 or newer"):
        check_java()


def test_cli_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deploy.kafka.broker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert "fetch" in out.stdout
    assert "run" in out.stdout
