"""How both sides (agent and centre) reach a Kafka cluster securely: TLS and SASL, as kwargs.

Production clusters are reached with TLS and SASL (DESIGN decision 1); the local test broker
speaks PLAINTEXT. :class:`KafkaSecurity` is a frozen, validated configuration table
(``[kafka.security]`` in the agent's TOML); secrets come from the environment through the config
loader (``FLEETAL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD``) and never appear in ``repr``.

>>> KafkaSecurity().kafka_kwargs()
{'security_protocol': 'PLAINTEXT'}
>>> KafkaSecurity(security_protocol="SASL_PLAINTEXT")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: sasl_mechanism: security_protocol SASL_PLAINTEXT needs a SASL mechanism ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

__all__ = ["KafkaSecurity", "SaslMechanism", "SecurityProtocol"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
# GSSAPI and OAUTHBEARER need objects (a Kerberos setup, a token provider), not settings.
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

_PROTOCOLS: Final = get_args(SecurityProtocol)
_MECHANISMS: Final = get_args(SaslMechanism)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """TLS and SASL settings of a Kafka client, checked when built.

    ``ssl_*`` files need ``SSL`` or ``SASL_SSL``; the files must exist. ``SASL_*`` protocols need
    a mechanism, a user name and a password. ``ssl_cafile`` unset means the system trust store.
    """

    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    """Check that the broker's certificate names the host connected to (keep it on)."""
    sasl_mechanism: SaslMechanism | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.security_protocol not in _PROTOCOLS:
            raise ValueError(
                f"security_protocol: {self.security_protocol!r} is not one of "
                f"{', '.join(_PROTOCOLS)}"
            )
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        sasl = self.security_protocol.startswith("SASL_")
        files = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        for name, path in files.items():
            if path is None:
                continue
            if not tls:
                raise ValueError(
                    f"{name}: set, but security_protocol is {self.security_protocol}; "
                    "use SSL or SASL_SSL for TLS"
                )
            if not Path(path).is_file():
                raise ValueError(f"{name}: {path} does not exist or is not a file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "ssl_certfile: a client certificate needs its key (ssl_keyfile), and vice versa"
            )
        if self.ssl_password is not None and self.ssl_keyfile is None:
            raise ValueError("ssl_password: set, but there is no ssl_keyfile to unlock")
        if sasl:
            if self.sasl_mechanism is None:
                raise ValueError(
                    f"sasl_mechanism: security_protocol {self.security_protocol} needs a SASL "
                    f"mechanism ({', '.join(_MECHANISMS)})"
                )
            if self.sasl_mechanism not in _MECHANISMS:
                raise ValueError(
                    f"sasl_mechanism: {self.sasl_mechanism!r} is not one of "
                    f"{', '.join(_MECHANISMS)}"
                )
            if not self.sasl_plain_username or self.sasl_plain_password is None:
                raise ValueError(
                    f"sasl_plain_username: SASL {self.sasl_mechanism} needs a user name and a "
                    "password (sasl_plain_password, best from the environment)"
                )
        elif any(
            v is not None
            for v in (self.sasl_mechanism, self.sasl_plain_username, self.sasl_plain_password)
        ):
            raise ValueError(
                f"sasl_mechanism: SASL settings given, but security_protocol is "
                f"{self.security_protocol}; use SASL_SSL (or SASL_PLAINTEXT on a trusted network)"
            )

    def kafka_kwargs(self) -> dict[str, object]:
        """The kafka-python client keyword arguments for these settings (only those set)."""
        kwargs: dict[str, object] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, name)
                if value is not None:
                    kwargs[name] = str(value)
            if self.ssl_password is not None:
                kwargs["ssl_password"] = self.ssl_password
        if self.security_protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_plain_username
            kwargs["sasl_plain_password"] = self.sasl_plain_password
        return kwargs
