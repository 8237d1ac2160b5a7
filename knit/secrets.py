"""Secrets: registry passwords encrypted at rest, and sealed to one node on the wire.

Layer: shared by the server (``SecretBox``, ``seal``) and the agent (``NodeKeyPair``).
Imports ``cryptography``, ``knit.errors`` and the standard library; its only I/O is reading
and creating its key files. See docs/decisions/0002.

- :class:`SecretBox` encrypts data at rest with AES-256-GCM under the server's key: the
  ``KNIT_SECRET_KEY`` environment variable (base64 of 32 bytes) if set, else ``secret.key`` in
  the server's data dir (created on first start with mode 0600). The associated data binds a
  ciphertext to its row (pass the row id), so a ciphertext copied to another row won't open.
- :class:`NodeKeyPair` is an agent's X25519 key pair, kept in ``node.key`` (mode 0600) in its
  data dir. Its public key travels in the registration heartbeat.
- :func:`seal` encrypts to a node's public key (ephemeral X25519, HKDF-SHA256, AES-256-GCM):
  only that node's :meth:`NodeKeyPair.open` recovers the plaintext. What a task carries is
  sealed with associated data that names the node, the task and (for a registry password)
  the registry (:func:`registry_aad`, :func:`env_aad`): a task captured on the bus and
  replayed to another node, under another task id, or for another registry opens nowhere.

Key files readable by group or others are refused, as ssh does. Nothing here logs or
reprs a key or a plaintext.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from knit.errors import SecretError
from knit.trust.macs import LinkKeys, derive_link_keys

log = logging.getLogger(__name__)

SECRET_KEY_FILE = "secret.key"
NODE_KEY_FILE = "node.key"
SECRET_KEY_ENV = "KNIT_SECRET_KEY"

_BOX_PREFIX = "k1."
_SEAL_PREFIX = "s1."
_SEAL_INFO = b"knit sealed box v1"
_NONCE = 12
_KEY = 32


def _b64decode(text: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding."""
    cleaned = text.strip().rstrip("=").replace("-", "+").replace("_", "/")
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _read_private(path: Path) -> str:
    """Read a key file, refusing one that group or others may access."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretError(
                f"{path} is accessible by group or others (mode {mode:o}): run `chmod 600 {path}`"
            )
        return path.read_text(encoding="ascii")
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror}") from exc


def _load_or_create(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The content of the key file at ``path``, creating it (mode 0600) with ``make()``.

    Two processes starting together agree on one key: the file appears atomically (a hard
    link of a complete temporary file) and the loser reads the winner's.
    """
    if path.exists():
        return _read_private(path), False
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(make() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return _read_private(path), False
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise SecretError(f"cannot create {path}: {exc.strerror}") from exc
    return _read_private(path), True


class SecretBox:
    """Authenticated encryption of data at rest (AES-256-GCM) under the server's key.

    Args:
        key: 32 random bytes.

    Raises:
        SecretError: the key is not 32 bytes.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY:
            raise SecretError(f"a secret key must be {_KEY} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @staticmethod
    def new_key() -> str:
        """A fresh key as text (URL-safe base64), e.g. for ``KNIT_SECRET_KEY``."""
        return _b64encode(AESGCM.generate_key(bit_length=256))

    @classmethod
    def generate(cls) -> SecretBox:
        """A box with a fresh random key that is kept nowhere (tests, simulations)."""
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def from_text(cls, text: str, source: str = "key") -> SecretBox:
        """A box from a key written as base64 (standard or URL-safe, as Fernet keys are).

        Raises:
            SecretError: ``text`` is not base64 of 32 bytes.
        """
        try:
            key = _b64decode(text)
        except (binascii.Error, ValueError) as exc:
            raise SecretError(f"{source} is not valid base64") from exc
        if len(key) != _KEY:
            raise SecretError(f"{source} must be base64 of {_KEY} bytes, not {len(key)}")
        return cls(key)

    @classmethod
    def from_data_dir(
        cls, data_dir: Path, *, environ: Mapping[str, str] | None = None
    ) -> SecretBox:
        """The server's box: ``KNIT_SECRET_KEY`` if set, else ``<data_dir>/secret.key``.

        The key file is created with mode 0600 on first use.

        Args:
            data_dir: the server's data dir (created with mode 0700 if missing).
            environ: where to look for ``KNIT_SECRET_KEY`` (default ``os.environ``).

        Raises:
            SecretError: the variable or the file holds no valid key, the file may be read
                by group or others, or it cannot be read or created.
        """
        env = os.environ if environ is None else environ
        text = env.get(SECRET_KEY_ENV)
        if text:
            log.info("secret key taken from %s", SECRET_KEY_ENV)
            return cls.from_text(text, SECRET_KEY_ENV)
        path = data_dir / SECRET_KEY_FILE
        text, created = _load_or_create(path, cls.new_key)
        if created:
            log.info("created a new secret key in %s", path)
        return cls.from_text(text, str(path))

    def encrypt(self, plaintext: str, aad: str) -> str:
        """Encrypt ``plaintext``; ``aad`` (e.g. the row id) must be given again to decrypt."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), aad.encode("utf-8"))
        return _BOX_PREFIX + _b64encode(nonce + sealed)

    def decrypt(self, token: str, aad: str) -> str:
        """Decrypt a token made by :meth:`encrypt` with the same key and ``aad``.

        Raises:
            SecretError: the token is malformed or was tampered with, or the key or the
                associated data differ.
        """
        if not token.startswith(_BOX_PREFIX):
            raise SecretError("not an encrypted secret (unknown format)")
        try:
            raw = _b64decode(token[len(_BOX_PREFIX) :])
        except (binascii.Error, ValueError) as exc:
            raise SecretError("encrypted secret is not valid base64") from exc
        if len(raw) < _NONCE + 16:
            raise SecretError("encrypted secret is truncated")
        try:
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], aad.encode("utf-8"))
        except InvalidTag as exc:
            raise SecretError(
                "cannot decrypt secret: wrong key, wrong row, or tampered data"
            ) from exc
        return plain.decode("utf-8")

    def __repr__(self) -> str:
        return "SecretBox(key=<hidden>)"


def _public_raw(public_b64: str) -> bytes:
    try:
        raw = _b64decode(public_b64)
    except (binascii.Error, ValueError) as exc:
        raise SecretError("public key is not valid base64") from exc
    if len(raw) != _KEY:
        raise SecretError(f"a public key must be {_KEY} bytes, not {len(raw)}")
    return raw


def _box_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY, salt=ephemeral + recipient, info=_SEAL_INFO)
    return AESGCM(hkdf.derive(shared))


def seal(plaintext: str, recipient_public_b64: str, aad: str = "") -> str:
    """Encrypt ``plaintext`` so only the holder of the recipient's private key can read it.

    Args:
        plaintext: the secret (a registry password).
        recipient_public_b64: the node's X25519 public key, base64 (from its heartbeat).
        aad: associated data the opener must give too (optional).

    Raises:
        SecretError: the public key is not a valid X25519 key.
    """
    recipient = _public_raw(recipient_public_b64)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    except ValueError as exc:
        raise SecretError("the recipient's public key is not usable") from exc
    nonce = os.urandom(_NONCE)
    box = _box_key(shared, ephemeral_raw, recipient)
    sealed = box.encrypt(nonce, plaintext.encode("utf-8"), aad.encode("utf-8"))
    return _SEAL_PREFIX + _b64encode(ephemeral_raw + nonce + sealed)


def registry_aad(node_id: str, task_id: str, registry_server: str) -> str:
    """The associated data of a registry password sealed into one task for one node."""
    return f"knit registry|{node_id}|{task_id}|{registry_server}"


def env_aad(node_id: str, task_id: str) -> str:
    """The associated data of the secret environment sealed into one task for one node."""
    return f"knit env|{node_id}|{task_id}"


class NodeKeyPair:
    """An agent's X25519 key pair: what is sealed to its public key only it can open."""

    __slots__ = ("_private", "_public_raw")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self._public_raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> NodeKeyPair:
        """A fresh key pair kept nowhere (tests, simulations)."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeKeyPair:
        """The key pair in ``<data_dir>/node.key``, created (mode 0600) on first use.

        Raises:
            SecretError: the file holds no valid key, may be read by group or others, or
                cannot be read or created.
        """
        path = data_dir / NODE_KEY_FILE

        def make() -> str:
            raw = X25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return _b64encode(raw)

        text, created = _load_or_create(path, make)
        if created:
            log.info("created a new node key pair in %s", path)
        try:
            raw = _b64decode(text)
            return cls(X25519PrivateKey.from_private_bytes(raw))
        except (binascii.Error, ValueError) as exc:
            raise SecretError(f"{path} does not hold a valid X25519 private key") from exc

    @property
    def public_key_b64(self) -> str:
        """The public key, standard base64 of 32 bytes (sent in the registration)."""
        return base64.b64encode(self._public_raw).decode("ascii")

    def open(self, sealed: str, aad: str = "") -> str:
        """Recover the plaintext of a box made by :func:`seal` for this key pair.

        Raises:
            SecretError: the box is malformed, tampered with, or sealed to another node.
        """
        if not sealed.startswith(_SEAL_PREFIX):
            raise SecretError("not a sealed secret (unknown format)")
        try:
            raw = _b64decode(sealed[len(_SEAL_PREFIX) :])
        except (binascii.Error, ValueError) as exc:
            raise SecretError("sealed secret is not valid base64") from exc
        if len(raw) < _KEY + _NONCE + 16:
            raise SecretError("sealed secret is truncated")
        ephemeral, nonce, body = raw[:_KEY], raw[_KEY : _KEY + _NONCE], raw[_KEY + _NONCE :]
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
            box = _box_key(shared, ephemeral, self._public_raw)
            plain = box.decrypt(nonce, body, aad.encode("utf-8"))
        except (InvalidTag, ValueError) as exc:
            raise SecretError(
                "cannot open sealed secret: sealed to another node, or tampered with"
            ) from exc
        return plain.decode("utf-8")

    def link_keys(self, server_key_b64: str, node_id: str) -> LinkKeys:
        """The keys this node shares with the server whose link key is ``server_key_b64``
        (knit.trust.macs): they prove the messages between them.

        Raises:
            SecretError: the server's key is not a valid X25519 public key.
        """
        try:
            return derive_link_keys(self._private, _public_raw(server_key_b64), node_id)
        except ValueError as exc:
            raise SecretError("the server's link key is not usable") from exc

    def __repr__(self) -> str:
        return f"NodeKeyPair(public={self.public_key_b64})"


__all__ = [
    "NODE_KEY_FILE",
    "SECRET_KEY_ENV",
    "SECRET_KEY_FILE",
    "NodeKeyPair",
    "SecretBox",
    "env_aad",
    "registry_aad",
    "seal",
]
