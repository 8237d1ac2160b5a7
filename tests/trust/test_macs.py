"""knit.trust.macs and both ends of a link: what a node sends, the server believes only
when it is the node's; what the server sends, a node runs only when it is the server's."""

from __future__ import annotations

import time

import pytest

from knit.agent.trust import AgentTrust
from knit.secrets import NodeKeyPair
from knit.server.trust import BusTrust
from knit.store.trust import NodeKeyRecord
from knit.trust import macs
from knit.trust.keys import ServerKeys
from knit.trust.nkeys import KeyKind, NKey
from knit.wire import subjects
from knit.wire.messages import StopTask

pytestmark = pytest.mark.unit

TASK_ID = "0193a4b2c3d47e5f8a9b0c1d2e3f4a5b"
INSTANCE_ID = "0193a4b2c3d47e5f8a9b0c1d2e3f4a5c"


def joined(trust: BusTrust, node_id: str) -> AgentTrust:
    """A node that joined ``trust``'s server: its side of the link."""
    keys = NodeKeyPair.generate()
    nats_key = NKey.generate(KeyKind.USER).public_key
    trust.pin(NodeKeyRecord(node_id, keys.public_key_b64, nats_key, None, time.time()))
    link = keys.link_keys(trust.keys.link_public, node_id)
    return AgentTrust.of(node_id, link, trust.keys.task_public)


def task(node_id: str | None, expires_at: float | None = None) -> StopTask:
    return StopTask(
        task_id=TASK_ID,
        instance_id=INSTANCE_ID,
        node_id=node_id,
        expires_at=time.time() + 600 if expires_at is None else expires_at,
    )


def test_both_ends_derive_the_same_keys_and_nobody_else_does() -> None:
    trust = BusTrust(ServerKeys.generate())
    node = joined(trust, "n1")
    assert trust.link("n1") == node.link
    other = BusTrust(ServerKeys.generate())
    assert joined(other, "n1").link != node.link  # another cluster's server
    assert trust.link("nobody") is None


def test_a_proof_is_the_last_field_and_comes_off_whole() -> None:
    message = macs.attach(b'{"a":1,"b":"x"}', "n1 abc")
    assert message == b'{"a":1,"b":"x","proof":"n1 abc"}'
    assert macs.detach(message) == (b'{"a":1,"b":"x"}', "n1 abc")
    assert macs.detach(b'{"a":1}') is None
    assert macs.detach(b'{"a":1,"proof":"\xff"}') is None


def test_the_server_believes_a_node_only_under_its_own_key() -> None:
    trust = BusTrust(ServerKeys.generate())
    a, b = joined(trust, "a"), joined(trust, "b")
    payload = b'{"node_id":"a"}'
    proved = a.prove(subjects.HEARTBEAT, payload)
    assert trust.check_up(subjects.HEARTBEAT, proved) == ("a", payload)
    # b speaking for a: b's MAC under a's name; a's MAC for another subject or payload.
    body, proof = macs.detach(b.prove(subjects.HEARTBEAT, payload)) or (b"", "")
    forged = macs.attach(body, "a " + proof.partition(" ")[2])
    assert trust.check_up(subjects.HEARTBEAT, forged) is None
    assert trust.claimed(forged) == "a"
    assert trust.check_up(subjects.TASK_STATUS, proved) is None
    tampered = proved.replace(b'"a"', b'"b"', 1)
    assert trust.check_up(subjects.HEARTBEAT, tampered) is None
    assert trust.check_up(subjects.HEARTBEAT, payload) is None  # no proof at all
    assert trust.check_up(subjects.HEARTBEAT, macs.attach(payload, "a")) is None


def test_a_removed_node_is_not_believed_any_more() -> None:
    trust = BusTrust(ServerKeys.generate())
    a = joined(trust, "a")
    proved = a.prove(subjects.HEARTBEAT, b'{"x":1}')
    trust.forget("a", trust.pins["a"].nats_key, time.time())
    assert trust.check_up(subjects.HEARTBEAT, proved) is None
    assert not trust.joined("a")
    with pytest.raises(KeyError):
        trust.prove_task("a", subjects.tasks_for("a"), b'{"x":1}')


def test_a_node_runs_only_proved_fresh_tasks_for_itself() -> None:
    trust = BusTrust(ServerKeys.generate())
    a, b = joined(trust, "a"), joined(trust, "b")
    own = subjects.tasks_for("a")
    payload = b'{"task":"for a"}'
    message = trust.prove_task("a", own, payload)
    assert a.open_task(own, message, broadcast=False) == payload
    assert b.open_task(subjects.tasks_for("b"), message, broadcast=False) is None
    assert a.open_task(own, message.replace(b"for a", b"for b"), broadcast=False) is None
    assert a.open_task(own, payload, broadcast=False) is None
    # A node's "up" MAC is not the server's "down" one: what it sends cannot come back.
    reflected = macs.attach(payload, macs.mac(a.link.up, own, payload))
    assert a.open_task(own, reflected, broadcast=False) is None

    assert a.task_refusal(task("a"), broadcast=False) is None
    assert "addressed to node b" in (a.task_refusal(task("b"), broadcast=False) or "")
    assert "expired" in (a.task_refusal(task("a", time.time() - 3600), broadcast=False) or "")
    assert a.task_refusal(task("a", time.time() - 3600), broadcast=False, known=True) is None


def test_broadcast_tasks_carry_the_servers_signature() -> None:
    trust = BusTrust(ServerKeys.generate())
    a = joined(trust, "a")
    payload = b'{"task":"any node"}'
    message = trust.prove_task(None, subjects.TASKS_BROADCAST, payload)
    assert a.open_task(subjects.TASKS_BROADCAST, message, broadcast=True) == payload
    changed = message.replace(b"any", b"one")
    assert a.open_task(subjects.TASKS_BROADCAST, changed, broadcast=True) is None
    own = trust.prove_task("a", subjects.tasks_for("a"), payload)  # a MAC is not a signature
    assert a.open_task(subjects.TASKS_BROADCAST, own, broadcast=True) is None
    assert a.task_refusal(task(None), broadcast=True) is None
    assert a.task_refusal(task("a"), broadcast=True) is not None
    other = BusTrust(ServerKeys.generate())
    foreign = other.prove_task(None, subjects.TASKS_BROADCAST, payload)
    assert a.open_task(subjects.TASKS_BROADCAST, foreign, broadcast=True) is None


def test_an_insecure_bus_believes_everything() -> None:
    trust = BusTrust(ServerKeys.generate(), insecure=True)
    assert trust.check_up(subjects.HEARTBEAT, b'{"x":1}') == ("", b'{"x":1}')
    assert trust.prove_task("a", subjects.tasks_for("a"), b'{"x":1}') == b'{"x":1}'
    assert trust.joined("anyone")


def test_keys_survive_their_text_and_hide_in_repr() -> None:
    keys = ServerKeys.generate()
    again = ServerKeys.from_text(keys.to_text())
    assert again.link_public == keys.link_public and again.task_public == keys.task_public
    assert again.account_signing.public_key == keys.account_signing.public_key
    assert keys.account_signing.seed not in repr(keys)
    with pytest.raises(ValueError):
        ServerKeys.from_text('{"format": "other"}')
