"""The server's long-lived keys: the bus's operator and accounts, the link key, the task key.

Layer: trust (pure). Imports ``cryptography``, ``knit.trust`` and the standard library.

Made once, on the server's first start, and kept in the database encrypted under the
server's secret key (``knit.secrets.SecretBox``): a stolen database file without that key
reveals none of them.

- ``operator``, ``system_account``, ``account`` and ``account_signing`` are the NATS nkeys of
  the embedded nats-server's operator mode (knit.trust.natsjwt): the account signing key
  issues each node's user JWT at join.
- ``link`` is an X25519 key: with a node's pinned public key it gives the keys that
  authenticate messages between them (knit.trust.macs).
- ``task`` is an Ed25519 key that signs tasks sent to any node (the broadcast subject).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from knit.trust.nkeys import KeyKind, NKey

FORMAT = "knit-server-keys/1"


def _raw_private(key: X25519PrivateKey | Ed25519PrivateKey) -> str:
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode("ascii")


def _raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class ServerKeys:
    """Every key the server signs or derives with (see the module's docstring)."""

    operator: NKey
    system_account: NKey
    account: NKey
    account_signing: NKey
    link: X25519PrivateKey
    task: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> ServerKeys:
        """A fresh set."""
        return cls(
            operator=NKey.generate(KeyKind.OPERATOR),
            system_account=NKey.generate(KeyKind.ACCOUNT),
            account=NKey.generate(KeyKind.ACCOUNT),
            account_signing=NKey.generate(KeyKind.ACCOUNT),
            link=X25519PrivateKey.generate(),
            task=Ed25519PrivateKey.generate(),
        )

    @property
    def link_public(self) -> str:
        """The link key's public half, base64 (given to nodes at join)."""
        return _raw_public(self.link)

    @property
    def task_public(self) -> str:
        """The task key's public half, base64 (given to nodes at join)."""
        return _raw_public(self.task)

    def to_text(self) -> str:
        """Every key as JSON text. A secret: encrypt it before it is stored."""
        return json.dumps(
            {
                "format": FORMAT,
                "operator": self.operator.seed,
                "system_account": self.system_account.seed,
                "account": self.account.seed,
                "account_signing": self.account_signing.seed,
                "link": _raw_private(self.link),
                "task": _raw_private(self.task),
            }
        )

    @classmethod
    def from_text(cls, text: str) -> ServerKeys:
        """The keys of :meth:`to_text`'s output.

        Raises:
            ValueError: not such a text (the message never repeats a key).
        """
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError
            return cls(
                operator=NKey.from_seed(data["operator"]),
                system_account=NKey.from_seed(data["system_account"]),
                account=NKey.from_seed(data["account"]),
                account_signing=NKey.from_seed(data["account_signing"]),
                link=X25519PrivateKey.from_private_bytes(base64.b64decode(data["link"])),
                task=Ed25519PrivateKey.from_private_bytes(base64.b64decode(data["task"])),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError("the stored server keys are not readable") from None

    def __repr__(self) -> str:
        return "ServerKeys(<hidden>)"


__all__ = ["ServerKeys"]
