"""Benchmark of the bus's trust checks: what proving and checking a message costs.

Layer: simulations (a tool): imports ``knit.trust``, ``knit.server.trust``,
``knit.agent.trust``, ``knit.wire`` and nats-py's header parser. Run
``python -m simulations.bench_trust``: it prints one line per figure, then, as its last
line, one JSON object of them, in microseconds per message (the best of a few rounds: the
machine is shared)::

    server_check_heartbeat_us        a heartbeat of differences (~340 bytes): MAC verified
    server_check_full_heartbeat_us   a full heartbeat of 100 instances (~24 KB)
    server_check_status_us           a task status
    server_prove_task_us             a deploy task: encoded and its MAC computed
    agent_prove_heartbeat_us         the agent's MAC on a heartbeat of differences
    agent_check_task_us              the agent's MAC check and refusal rules on a task
    nats_parse_headers_us            for comparison: nats-py parsing two headers of a received
                                     message, what proofs in NATS headers would cost
    join_issue_jwt_us                the server signing a node's user JWT at join
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from nats.aio.client import Client

from knit.agent.trust import AgentTrust
from knit.secrets import NodeKeyPair
from knit.server.trust import BusTrust
from knit.store.trust import NodeKeyRecord
from knit.trust.keys import ServerKeys
from knit.trust.nkeys import KeyKind, NKey
from knit.wire import subjects
from knit.wire.messages import (
    Capacity,
    DeployTask,
    Heartbeat,
    InstanceReport,
    TaskDeployment,
    TaskStatus,
    encode,
)

ROUNDS = 5


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """The best, over ``ROUNDS``, of the mean time of one call, in microseconds."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def heartbeat(node_id: str, keys: NodeKeyPair, instances: int) -> bytes:
    reports = [
        InstanceReport(
            instance_id=f"{i:032x}",
            deployment_id=f"{i % 7:032x}",
            container_id=f"{i:064x}",
            status="running",
        )
        for i in range(instances)
    ]
    return encode(
        Heartbeat(
            node_id=node_id,
            hostname="bench",
            seq=7,
            capacity=Capacity(cpus=2, memory_bytes=2**33),
            public_key=keys.public_key_b64,
            full=instances > 0,
            instances=reports,
            sent_at=time.time(),
        )
    )


def main() -> None:
    """Measure and print the figures."""
    trust = BusTrust(ServerKeys.generate())
    node_id = "0193a4b2c3d47e5f8a9b0c1d2e3f4a5b"
    keys = NodeKeyPair.generate()
    nats_key = NKey.generate(KeyKind.USER).public_key
    trust.pin(NodeKeyRecord(node_id, keys.public_key_b64, nats_key, None, time.time()))
    agent = AgentTrust.of(
        node_id, keys.link_keys(trust.keys.link_public, node_id), trust.keys.task_public
    )
    small = heartbeat(node_id, keys, 0)
    full = heartbeat(node_id, keys, 100)
    status = encode(
        TaskStatus(
            task_id=f"{1:032x}", instance_id=f"{2:032x}", node_id=node_id, state="succeeded", at=1.0
        )
    )
    task = DeployTask(
        task_id=f"{1:032x}",
        instance_id=f"{2:032x}",
        instance_index=0,
        deployment=TaskDeployment(id=f"{3:032x}", name="web", image="nginx:1"),
        node_id=node_id,
        expires_at=time.time() + 600,
    )
    own = subjects.tasks_for(node_id)
    proved_small = agent.prove(subjects.HEARTBEAT, small)
    proved_full = agent.prove(subjects.HEARTBEAT, full)
    proved_status = agent.prove(subjects.TASK_STATUS, status)
    task_message = trust.prove_task(node_id, own, encode(task))
    raw_headers = b"Knit-Node: 0193a4b2c3d47e5f8a9b0c1d2e3f4a5b\r\nKnit-Mac: " + b"x" * 43 + b"\r\n"
    assert trust.check_up(subjects.HEARTBEAT, proved_full) == (node_id, full)

    def prove_task() -> object:
        return trust.prove_task(node_id, own, encode(task))

    def check_task() -> object:
        agent.open_task(own, task_message, broadcast=False)
        return agent.task_refusal(task, broadcast=False)

    figures = {
        "server_check_heartbeat_us": per_call_us(
            lambda: trust.check_up(subjects.HEARTBEAT, proved_small), 50_000
        ),
        "server_check_full_heartbeat_us": per_call_us(
            lambda: trust.check_up(subjects.HEARTBEAT, proved_full), 5_000
        ),
        "server_check_status_us": per_call_us(
            lambda: trust.check_up(subjects.TASK_STATUS, proved_status), 50_000
        ),
        "server_prove_task_us": per_call_us(prove_task, 20_000),
        "agent_prove_heartbeat_us": per_call_us(
            lambda: agent.prove(subjects.HEARTBEAT, small), 50_000
        ),
        "agent_check_task_us": per_call_us(check_task, 20_000),
        "nats_parse_headers_us": per_call_us(
            lambda: Client._parse_header_lines(raw_headers), 50_000
        ),
        "join_issue_jwt_us": per_call_us(lambda: trust.node_jwt(node_id, nats_key), 2_000),
    }
    for name, value in figures.items():
        print(f"{name:34} {value:8.2f} µs")
    print(json.dumps({name: round(value, 2) for name, value in figures.items()}))


if __name__ == "__main__":
    main()
