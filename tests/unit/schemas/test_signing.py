"""Signatures of staged updates cover the stage: a canary's update cannot be widened to the
fleet, nor a fleet update narrowed, nor its vehicles changed, without the centre's key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from schemas.messages import ModelUpdate
from schemas.signing import (
    SignatureError,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_update,
    verify_update,
)


def test_the_stage_is_signed(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    key, pub = load_private_key(tmp_path / "k.pem"), load_public_key(tmp_path / "k.pub.pem")
    base = ModelUpdate("det", "2", "ab" * 32, 10, "0.1.0", 7, inline=b"x" * 10)
    canary = sign_update(
        dataclasses.replace(base, target_vehicles=("veh-a",), target_fraction=0.0), key
    )
    verify_update(canary, pub)
    fleet = sign_update(base, key)
    verify_update(fleet, pub)
    forged = [
        dataclasses.replace(canary, target_vehicles=(), target_fraction=1.0),  # widened
        dataclasses.replace(canary, target_vehicles=("veh-a", "veh-b")),  # one more canary
        dataclasses.replace(canary, target_fraction=0.5),
        dataclasses.replace(fleet, target_vehicles=("veh-a",), target_fraction=0.0),  # narrowed
    ]
    for update in forged:
        with pytest.raises(SignatureError, match="bad signature"):
            verify_update(update, pub)
