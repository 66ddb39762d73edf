"""Rollout from the centre: a registered model, signed, onto the models topic for the fleet.

``ingest-service publish-model --kind camera [--version N]`` fetches the version (default: the
registry's ``production``) from the model registry, checks its sha256, reads the name and
version the edge runner will see from the ONNX metadata, signs the update with the centre's
Ed25519 key (``[rollout] signing_key``; :mod:`schemas.signing`) and sends it in chunks on the
models topic (``[rollout] topic``), where every agent reads it (``edge_agent.rollout``).
A model larger than ``[rollout] inline_max_bytes`` goes by reference instead: its bytes are
put in the blob store (content-addressed) and the update carries ``model_base_url`` + the
blob's key (:func:`ingest_service.blobstore.blob_key`), with the same sha256, size and
signature; the vehicle fetches and checks it (``edge_agent.models.download``).
``ingest-service rollout-keygen`` makes the key pair: the private key stays at the centre, the
public key goes to every vehicle (``[rollout] public_key`` of the agent).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_agent.models.metadata import read_metadata
from ingest_service.blobstore import blob_key, open_blob_store
from ingest_service.config import IngestConfig
from ingest_service.registry import ModelRegistry, RegistryError
from schemas.kafka_net import first_reachable
from schemas.messages import ModelUpdate
from schemas.models_topic import publish_model
from schemas.signing import load_private_key, sign_update

__all__ = ["build_update", "publish"]


def build_update(
    cfg: IngestConfig,
    registry: ModelRegistry,
    kind: str,
    version: int | None,
    *,
    target_vehicles: tuple[str, ...] = (),
    target_fraction: float = 1.0,
) -> ModelUpdate:
    """The update of ``kind``'s ``version`` (``None``: production), for the whole fleet or for
    a stage (``target_vehicles``, ``target_fraction``): inline or by reference by its size,
    signed when ``[rollout] signing_key`` is set."""
    settings = cfg.rollout
    if version is None:
        production = registry.alias(kind, "production")
        if production is None:
            raise RegistryError(f"{registry.model_name(kind)} has no production version yet")
        version = production.version
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.download(kind, version, Path(tmp))
        data = path.read_bytes()
        meta = read_metadata(path)
    url = None
    if len(data) > settings.inline_max_bytes:
        url = _by_reference(cfg, data, f"{meta.name} {meta.version}")
    update = ModelUpdate(
        name=meta.name,
        version=meta.version,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        min_agent_version=settings.min_agent_version,
        created_ns=time.time_ns(),
        url=url,
        inline=None if url else data,
        target_vehicles=target_vehicles,
        target_fraction=target_fraction,
    )
    if settings.signing_key is not None:
        update = sign_update(update, load_private_key(settings.signing_key))
    return update


def _by_reference(cfg: IngestConfig, data: bytes, what: str) -> str:
    """Put the model in the blob store; the URL vehicles fetch it from."""
    base = cfg.rollout.model_base_url
    if not base:
        raise RegistryError(
            f"{what} is {len(data)} bytes, above [rollout] inline_max_bytes "
            f"({cfg.rollout.inline_max_bytes}): set [rollout] model_base_url to where vehicles "
            "can fetch the blob store over http(s), or raise inline_max_bytes"
        )
    store = open_blob_store(cfg)
    try:
        ref = store.put(data)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    return f"{base.rstrip('/')}/{blob_key(ref)}"


def publish(cfg: IngestConfig, update: ModelUpdate, *, timeout_s: float = 60.0) -> int:
    """Send ``update`` on the models topic and wait for the broker's acks; records sent."""
    from kafka import KafkaProducer

    servers = list(cfg.kafka.bootstrap_servers)
    up, why = first_reachable(servers)
    if up is None:  # kafka-python would retry for its whole timeout and leak the attempt
        raise RegistryError(f"cannot publish: no broker answers at {servers} ({why})")
    producer: Any = KafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        client_id=f"{cfg.kafka.client_id}-publisher",
        max_request_size=cfg.rollout.max_message_bytes + 64 * 1024,
        **cfg.kafka.security.kafka_kwargs(),
    )
    try:
        sent = publish_model(
            producer, cfg.rollout.topic, update, max_message_bytes=cfg.rollout.max_message_bytes
        )
        producer.flush(timeout_s)
    finally:
        producer.close(timeout=timeout_s)
    return sent
