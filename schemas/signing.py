"""Ed25519 signatures of model updates: the centre signs, the fleet verifies.

The signature covers the model's bytes (through their sha256, which the agent checks against
the bytes it received before anything else) and the metadata an attacker would want to change:
name, version, size, minimum agent version, creation time. The signed message is::

    b"fleetal-model-update-v1\\0" + name + "\\0" + version + "\\0" + sha256 + "\\0" + size_bytes
        + "\\0" + min_agent_version + "\\0" + created_ns        (UTF-8, numbers in decimal)

An update for a stage of a staged rollout (not the whole fleet) signs its targets too, under
another domain, so that a canary's update cannot be widened, nor a fleet update narrowed,
without the key::

    b"fleetal-model-update-v2\\0" + (the v1 fields, as above) + "\\0" + target vehicles
        (sorted, joined by ",") + "\\0" + repr(target_fraction)

Keys are files: the private key (centre only) as PKCS#8 PEM, the public key (on every vehicle)
as SubjectPublicKeyInfo PEM; :func:`generate_keypair` writes both.

>>> import tempfile, pathlib
>>> from schemas.messages import ModelUpdate
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> generate_keypair(d / "key.pem", d / "key.pub.pem")
>>> update = ModelUpdate("det", "2", "ab" * 32, 10, "0.1.0", 0, inline=b"x" * 10)
>>> signed = sign_update(update, load_private_key(d / "key.pem"))
>>> verify_update(signed, load_public_key(d / "key.pub.pem"))
>>> import dataclasses
>>> verify_update(dataclasses.replace(signed, version="3"), load_public_key(d / "key.pub.pem"))
Traceback (most recent call last):
...
schemas.signing.SignatureError: det 3: bad signature (a wrong key, or changed after signing)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.errors import SchemaError
from schemas.messages import ModelUpdate

__all__ = [
    "SignatureError",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "sign_update",
    "signed_message",
    "verify_update",
]

_DOMAIN = b"fleetal-model-update-v1\0"
_DOMAIN_STAGED = b"fleetal-model-update-v2\0"


class SignatureError(SchemaError):
    """A model update is unsigned, or its signature does not verify."""


def signed_message(update: ModelUpdate) -> bytes:
    """The bytes the signature covers (module docstring)."""
    fields = (
        update.name,
        update.version,
        update.sha256,
        str(update.size_bytes),
        update.min_agent_version,
        str(update.created_ns),
    )
    if update.whole_fleet:
        return _DOMAIN + "\0".join(fields).encode("utf-8")
    stage = (",".join(sorted(update.target_vehicles)), repr(float(update.target_fraction)))
    return _DOMAIN_STAGED + "\0".join((*fields, *stage)).encode("utf-8")


def sign_update(update: ModelUpdate, key: Ed25519PrivateKey) -> ModelUpdate:
    """``update`` with its Ed25519 signature."""
    return dataclasses.replace(update, signature=key.sign(signed_message(update)))


def verify_update(update: ModelUpdate, key: Ed25519PublicKey) -> None:
    """Return if ``key``'s private key signed ``update``; :class:`SignatureError` otherwise."""
    what = f"{update.name} {update.version}"
    if update.signature is None:
        raise SignatureError(f"{what} is not signed, and this agent only takes signed models")
    try:
        key.verify(update.signature, signed_message(update))
    except InvalidSignature:
        raise SignatureError(
            f"{what}: bad signature (a wrong key, or changed after signing)"
        ) from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The centre's signing key (PKCS#8 PEM, unencrypted)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not a readable PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The fleet's verification key (SubjectPublicKeyInfo PEM)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not a readable PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new key pair; the private key file is created with mode 0600."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public_path.write_bytes(public)
