"""knit.trust.nkeys: the NATS nkey text encoding, checked against known vectors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knit.trust.nkeys import KeyKind, NKey, crc16, decode_public, encode_public, verify

pytestmark = pytest.mark.unit

# A user seed and the public key the reference implementation (the `nkeys` package) gives it.
SEED = "SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY"
PUBLIC = "UAT6BWCSCWLUKJT6K6MBJJOEOTXZ5AJDOYKNEVRFC7VNO6OA43N4TRNO"


def test_crc16_is_xmodem() -> None:
    assert crc16(b"123456789") == 0x31C3


def test_a_seed_gives_its_known_public_key() -> None:
    key = NKey.from_seed(SEED)
    assert key.kind is KeyKind.USER
    assert key.public_key == PUBLIC
    assert key.seed == SEED


@pytest.mark.parametrize("kind", list(KeyKind))
def test_keys_round_trip_and_start_with_their_letter(kind: KeyKind) -> None:
    key = NKey.generate(kind)
    assert key.public_key[0] == {"OPERATOR": "O", "ACCOUNT": "A", "USER": "U"}[kind.name]
    assert key.seed[:2] == "S" + key.public_key[0]
    again = NKey.from_seed(key.seed)
    assert again.public_key == key.public_key and again.kind is kind
    assert len(decode_public(key.public_key, kind)) == 32


def test_signatures_verify_with_the_public_key_only() -> None:
    key = NKey.generate(KeyKind.USER)
    signature = key.sign(b"nonce")
    assert verify(key.public_key, KeyKind.USER, b"nonce", signature)
    assert not verify(key.public_key, KeyKind.USER, b"other", signature)
    other = NKey.generate(KeyKind.USER)
    assert not verify(other.public_key, KeyKind.USER, b"nonce", signature)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base32!",
        PUBLIC,  # a public key is not a seed
        SEED[:-1] + ("A" if SEED[-1] != "A" else "B"),  # checksum broken
    ],
)
def test_bad_seeds_are_refused_without_repeating_them(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        NKey.from_seed(text)
    assert SEED not in str(caught.value)


def test_a_public_key_of_another_kind_is_refused() -> None:
    account = NKey.generate(KeyKind.ACCOUNT).public_key
    with pytest.raises(ValueError, match="user"):
        decode_public(account, KeyKind.USER)


@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_encode_and_decode(raw: bytes) -> None:
    assert decode_public(encode_public(KeyKind.ACCOUNT, raw), KeyKind.ACCOUNT) == raw


def test_repr_hides_the_seed() -> None:
    key = NKey.generate(KeyKind.USER)
    assert key.seed not in repr(key)
