"""NATS decentralized authentication: the operator, account and user JWTs Knit issues.

Layer: trust (pure). Imports ``knit.trust.nkeys`` and the standard library only.

Knit's embedded nats-server runs in *operator mode*: it trusts one operator key, and knows
two accounts (the system account, and ``KNIT`` where all of Knit's traffic flows) from JWTs
that operator signed. Every connection presents a *user JWT* signed by the ``KNIT`` account's
signing key, and proves it holds the user's private key by signing the server's nonce. A
user JWT carries the user's permissions, so admitting a node needs no change to the
nats-server's configuration (thousands of joins, no reload). Revoking one is a line in the
account JWT's ``revocations`` (the server reloads that one; see knit/natsd.py).

The claims follow the NATS JWT v2 format (``nats-io/jwt``): a JWS with the header
``{"typ":"JWT","alg":"ed25519-nkey"}``, the issuer's nkey as ``iss``, the subject's as
``sub``, and the typed part under ``nats``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from knit.trust.nkeys import KeyKind, NKey, verify
from knit.wire import subjects

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
"""Account limits: none (Knit's own server decides what its agents may do)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def encode_jwt(
    issuer: NKey,
    subject: str,
    name: str,
    nats: Mapping[str, Any],
    *,
    expires: int | None = None,
    issued_at: int | None = None,
) -> str:
    """Sign claims about ``subject`` (an nkey's text) by ``issuer``, valid until ``expires``
    (a Unix time; None: for ever), issued at ``issued_at`` (None: now).

    ``jti`` is the SHA-512/256 of the claims without it, as the reference library makes it.
    """
    claims: dict[str, Any] = {
        "jti": "",
        "iat": int(time.time()) if issued_at is None else issued_at,
        "iss": issuer.public_key,
        "name": name,
        "sub": subject,
        "nats": dict(nats),
    }
    if expires is not None:
        claims["exp"] = expires
    digest = hashlib.new("sha512_256", _dumps(claims)).digest()
    claims["jti"] = base64.b32encode(digest).decode("ascii").rstrip("=")
    signing_input = f"{_b64(_dumps(_HEADER))}.{_b64(_dumps(claims))}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def decode_jwt(token: str, issuer_kind: KeyKind = KeyKind.ACCOUNT) -> dict[str, Any]:
    """The claims of a JWT whose signature by its ``iss`` verifies.

    Raises:
        ValueError: malformed, or the signature does not verify.
    """
    try:
        header, body, signature = token.split(".")
        claims = json.loads(_unb64(body))
        signed = verify(claims["iss"], issuer_kind, f"{header}.{body}".encode(), _unb64(signature))
    except (ValueError, KeyError, TypeError):
        raise ValueError("not a NATS JWT") from None
    if not signed or not isinstance(claims, dict):
        raise ValueError("the JWT's signature does not verify")
    return claims


OPERATOR_ISSUED_AT = 1_735_689_600
"""The ``iat`` of every operator JWT (2025-01-01): the same keys always give the same JWT.
A nats-server refuses to reload a configuration whose operator JWT changed, and one
generated again (``knit nats-config``, a server's restart) must not count as changed."""


def operator_jwt(operator: NKey, system_account: str) -> str:
    """The self-signed operator JWT, naming the system account (the same for the same keys:
    ``OPERATOR_ISSUED_AT``, and Ed25519 signatures are deterministic)."""
    return encode_jwt(
        operator,
        operator.public_key,
        "knit",
        {"type": "operator", "version": 2, "system_account": system_account},
        issued_at=OPERATOR_ISSUED_AT,
    )


def account_jwt(
    operator: NKey,
    account: str,
    name: str,
    *,
    signing_keys: Sequence[str] = (),
    revocations: Mapping[str, int] | None = None,
) -> str:
    """An account's JWT, signed by the operator.

    Args:
        operator: the operator key.
        account: the account's public key (``A...``).
        name: its name (``KNIT``, ``SYS``).
        signing_keys: keys that may sign the account's user JWTs.
        revocations: user public key → a Unix time; user JWTs of that user issued at or
            before it are refused, and its connections are closed.
    """
    nats: dict[str, Any] = {"type": "account", "version": 2, "limits": dict(UNLIMITED)}
    if signing_keys:
        nats["signing_keys"] = list(signing_keys)
    if revocations:
        nats["revocations"] = dict(revocations)
    return encode_jwt(operator, account, name, nats)


def node_permissions(node_id: str) -> dict[str, Any]:
    """What an agent may do on the bus: publish heartbeats, task statuses and mesh
    synchronisation requests, the lines of its own log streams (and replies to requests it
    received); subscribe to its own task subject, its own log requests, the broadcast queue
    and the mesh's membership."""
    return {
        "pub": {
            "allow": [
                subjects.HEARTBEAT,
                subjects.TASK_STATUS,
                subjects.MESH_SYNC,
                subjects.logs_from(node_id),
            ]
        },
        "sub": {
            "allow": [
                subjects.tasks_for(node_id),
                subjects.logs_to(node_id),
                f"{subjects.TASKS_BROADCAST} {subjects.BROADCAST_QUEUE}",
                subjects.MESH_PEERS,
            ]
        },
        "resp": {"max": 1, "ttl": 0},
    }


def user_jwt(
    signing_key: NKey,
    account: str,
    user: str,
    name: str,
    permissions: Mapping[str, Any] | None = None,
    *,
    expires: int | None = None,
) -> str:
    """A user JWT of ``account``, signed by one of its signing keys.

    Args:
        signing_key: an account signing key (listed in the account JWT).
        account: the account's public key.
        user: the user's public key (``U...``); only its holder can connect with this JWT.
        name: a name shown in nats-server's logs (a node id, ``knit-server``).
        permissions: ``pub``/``sub``/``resp`` limits; None: anything in the account.
        expires: a Unix time after which NATS refuses it (and closes its connections).
    """
    nats: dict[str, Any] = {
        "type": "user",
        "version": 2,
        "issuer_account": account,
        "subs": -1,
        "data": -1,
        "payload": -1,
    }
    if permissions:
        nats.update(permissions)
    return encode_jwt(signing_key, user, name, nats, expires=expires)


__all__ = [
    "OPERATOR_ISSUED_AT",
    "UNLIMITED",
    "account_jwt",
    "decode_jwt",
    "encode_jwt",
    "node_permissions",
    "operator_jwt",
    "user_jwt",
]
