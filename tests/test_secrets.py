"""Tests of knit.secrets: encryption at rest, node key pairs, sealed boxes."""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knit.errors import SecretError
from knit.secrets import (
    NODE_KEY_FILE,
    SECRET_KEY_ENV,
    SECRET_KEY_FILE,
    NodeKeyPair,
    SecretBox,
    seal,
)

pytestmark = pytest.mark.unit


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- SecretBox -----------------------------------------------------------------------------


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    box = SecretBox.from_data_dir(data_dir, environ={})
    key_file = data_dir / SECRET_KEY_FILE
    assert mode_of(key_file) == 0o600
    assert mode_of(data_dir) == 0o700
    token = box.encrypt("hunter2", "row-1")
    again = SecretBox.from_data_dir(data_dir, environ={})
    assert again.decrypt(token, "row-1") == "hunter2"
    assert [p.name for p in data_dir.iterdir()] == [SECRET_KEY_FILE]


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    SecretBox.from_data_dir(tmp_path, environ={})
    os.chmod(tmp_path / SECRET_KEY_FILE, 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        SecretBox.from_data_dir(tmp_path, environ={})


def test_environment_key_wins_over_the_file(tmp_path: Path) -> None:
    key = SecretBox.new_key()
    from_env = SecretBox.from_data_dir(tmp_path, environ={SECRET_KEY_ENV: key})
    assert not (tmp_path / SECRET_KEY_FILE).exists()
    token = from_env.encrypt("pw", "r")
    assert SecretBox.from_text(key).decrypt(token, "r") == "pw"
    standard = base64.b64encode(base64.urlsafe_b64decode(key)).decode()
    assert (
        SecretBox.from_data_dir(tmp_path, environ={SECRET_KEY_ENV: standard}).decrypt(token, "r")
        == "pw"
    )


@pytest.mark.parametrize("value", ["not base64 at all!", base64.b64encode(b"x" * 16).decode()])
def test_a_bad_environment_key_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(SecretError, match=SECRET_KEY_ENV):
        SecretBox.from_data_dir(tmp_path, environ={SECRET_KEY_ENV: value})


def test_a_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRET_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short\n")
    os.close(fd)
    with pytest.raises(SecretError, match=SECRET_KEY_FILE):
        SecretBox.from_data_dir(tmp_path, environ={})


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    boxes: list[SecretBox] = []
    threads = [
        threading.Thread(target=lambda: boxes.append(SecretBox.from_data_dir(tmp_path, environ={})))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    token = boxes[0].encrypt("same", "r")
    assert all(box.decrypt(token, "r") == "same" for box in boxes)


def test_associated_data_binds_the_ciphertext_to_its_row() -> None:
    box = SecretBox.generate()
    token = box.encrypt("pw", "registry:r1")
    with pytest.raises(SecretError, match="wrong row"):
        box.decrypt(token, "registry:r2")


def test_wrong_key_and_tampering_are_detected() -> None:
    box = SecretBox.generate()
    token = box.encrypt("pw", "r")
    with pytest.raises(SecretError):
        SecretBox.generate().decrypt(token, "r")
    raw = bytearray(base64.urlsafe_b64decode(token[3:]))
    raw[-1] ^= 1
    with pytest.raises(SecretError):
        box.decrypt(token[:3] + base64.urlsafe_b64encode(bytes(raw)).decode(), "r")
    for bad in [
        "",
        "k1.",
        "k1.!!!",
        "plaintext",
        "k1." + base64.urlsafe_b64encode(b"x" * 10).decode(),
    ]:
        with pytest.raises(SecretError):
            box.decrypt(bad, "r")


def test_encryption_is_randomized() -> None:
    box = SecretBox.generate()
    assert box.encrypt("pw", "r") != box.encrypt("pw", "r")


@settings(max_examples=50, deadline=None)
@given(st.text(), st.text())
def test_any_text_round_trips(plaintext: str, aad: str) -> None:
    box = SecretBox.generate()
    assert box.decrypt(box.encrypt(plaintext, aad), aad) == plaintext


def test_repr_and_logs_hide_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = SecretBox.new_key()
    with caplog.at_level(logging.DEBUG, logger="knit.secrets"):
        box = SecretBox.from_data_dir(tmp_path, environ={SECRET_KEY_ENV: key})
        SecretBox.from_data_dir(tmp_path / "other", environ={})
    assert key not in repr(box)
    assert "hidden" in repr(box)
    file_key = (tmp_path / "other" / SECRET_KEY_FILE).read_text().strip()
    assert key not in caplog.text and file_key not in caplog.text


# --- NodeKeyPair and seal ------------------------------------------------------------------


def test_node_key_pair_persists_with_mode_0600(tmp_path: Path) -> None:
    first = NodeKeyPair.load_or_create(tmp_path)
    assert mode_of(tmp_path / NODE_KEY_FILE) == 0o600
    again = NodeKeyPair.load_or_create(tmp_path)
    assert again.public_key_b64 == first.public_key_b64
    assert len(base64.b64decode(first.public_key_b64)) == 32


def test_a_loose_node_key_file_is_refused(tmp_path: Path) -> None:
    NodeKeyPair.load_or_create(tmp_path)
    os.chmod(tmp_path / NODE_KEY_FILE, 0o640)
    with pytest.raises(SecretError, match="group or others"):
        NodeKeyPair.load_or_create(tmp_path)


def test_only_the_recipient_opens_a_sealed_box() -> None:
    node = NodeKeyPair.generate()
    other = NodeKeyPair.generate()
    sealed = seal("registry-password", node.public_key_b64)
    assert "registry-password" not in sealed
    assert node.open(sealed) == "registry-password"
    with pytest.raises(SecretError, match="another node"):
        other.open(sealed)


def test_sealing_is_randomized_and_bound_to_its_context() -> None:
    node = NodeKeyPair.generate()
    assert seal("pw", node.public_key_b64) != seal("pw", node.public_key_b64)
    sealed = seal("pw", node.public_key_b64, aad="task-1")
    assert node.open(sealed, aad="task-1") == "pw"
    with pytest.raises(SecretError):
        node.open(sealed, aad="task-2")


def test_tampered_or_malformed_boxes_are_refused() -> None:
    node = NodeKeyPair.generate()
    sealed = seal("pw", node.public_key_b64)
    raw = bytearray(base64.urlsafe_b64decode(sealed[3:]))
    raw[40] ^= 1
    tampered = sealed[:3] + base64.urlsafe_b64encode(bytes(raw)).decode()
    for bad in [
        tampered,
        "",
        "s1.",
        "s1.@@@",
        "k1.abcd",
        "s1." + base64.urlsafe_b64encode(b"x" * 50).decode(),
    ]:
        with pytest.raises(SecretError):
            node.open(bad)


@pytest.mark.parametrize(
    "public",
    ["", "not-base64!", base64.b64encode(b"x" * 31).decode(), base64.b64encode(bytes(32)).decode()],
)
def test_sealing_to_a_bad_public_key_is_refused(public: str) -> None:
    with pytest.raises(SecretError):
        seal("pw", public)


def test_node_key_repr_shows_only_the_public_key(tmp_path: Path) -> None:
    node = NodeKeyPair.load_or_create(tmp_path)
    private_text = (tmp_path / NODE_KEY_FILE).read_text().strip()
    assert private_text not in repr(node)
    assert node.public_key_b64 in repr(node)


@settings(max_examples=30, deadline=None)
@given(st.text())
def test_any_text_seals_and_opens(plaintext: str) -> None:
    node = NodeKeyPair.generate()
    assert node.open(seal(plaintext, node.public_key_b64)) == plaintext
