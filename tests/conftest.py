"""Session-wide fixtures: one real local Kafka broker per test session, a fresh topic per test.

Any test that uses the ``kafka`` fixture (directly or through ``topic``) is marked
``integration`` automatically, so ``pytest -m "not integration"`` never starts a broker.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from deploy.kafka.broker import LocalKafka

TOPIC_PARTITIONS = 3
_UNSAFE_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9-]+")


# kafka-python 3.0.x loads its protocol schemas with importlib.resources.read_text, deprecated
# since Python 3.11 (read_text calls open_text, which warns too). With warnings as errors the
# client could not even be imported. Ignore exactly these two, from exactly those modules.
_THIRD_PARTY_WARNINGS = (
    "ignore:read_text is deprecated:DeprecationWarning:kafka.protocol.schemas.load_json",
    "ignore:open_text is deprecated:DeprecationWarning:importlib.resources._legacy",
)


def pytest_configure(config: pytest.Config) -> None:
    for line in _THIRD_PARTY_WARNINGS:
        config.addinivalue_line("filterwarnings", line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kafka" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    """A single-node Kafka broker (KRaft) on loopback, shared by the whole session.

    Tests may ``restart()`` it (same port, same data) or ``kill()`` then ``restart()`` it;
    a test that does must leave it running.
    """
    broker = LocalKafka()
    broker.start(timeout_s=120.0)
    try:
        yield broker
    finally:
        broker.stop()


def topic_name(test_name: str) -> str:
    """A unique, legal Kafka topic name derived from a test's name."""
    stem = _UNSAFE_TOPIC_CHARS.sub("-", test_name).strip("-")[:120]
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(kafka: LocalKafka, request: pytest.FixtureRequest) -> str:
    """A new topic with three partitions, for this test alone."""
    name = topic_name(request.node.name)
    kafka.create_topic(name, partitions=TOPIC_PARTITIONS)
    return name
