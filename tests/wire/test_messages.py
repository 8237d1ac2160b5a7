"""Tests of knit.wire: subjects, message round trips, version and shape rejection, speed."""

from __future__ import annotations

import base64
import json
import time

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knit.errors import KnitError
from knit.wire import subjects
from knit.wire.errors import UnsupportedVersion, WireError
from knit.wire.messages import (
    SCHEMA_VERSION,
    Capacity,
    DeployTask,
    Heartbeat,
    InstanceReport,
    NetworkAttachment,
    SealedCredentials,
    StopTask,
    TaskDeployment,
    TaskPort,
    TaskResources,
    TaskRestartPolicy,
    TaskStatus,
    TaskTemplate,
    decode,
    decode_heartbeat,
    decode_status,
    decode_task,
    encode,
    report_changed,
)

pytestmark = pytest.mark.unit

PUBLIC_KEY = base64.b64encode(bytes(range(32))).decode()
T1, T2, I1, D1 = ("1" * 32, "2" * 32, "a" * 32, "d" * 32)
"""Ids as Knit spells them (tasks refuse anything else)."""


def heartbeat(instances: int = 2, **fields: object) -> Heartbeat:
    values: dict[str, object] = {
        "node_id": "0f1e2d3c",
        "hostname": "host-a",
        "seq": 0,
        "first": True,
        "capacity": Capacity(cpus=4, memory_bytes=8 << 30),
        "labels": {"zone": "eu"},
        "docker_version": "27.0",
        "agent_version": "0.1.0",
        "public_key": PUBLIC_KEY,
        "instances": [
            InstanceReport(
                instance_id=f"inst-{i:04d}-{'a' * 24}",
                deployment_id="d" * 32,
                container_id="c" * 64,
                status="running",
            )
            for i in range(instances)
        ],
        "sent_at": 1_700_000_000.5,
        **fields,
    }
    return Heartbeat.model_validate(values)


def deploy_task() -> DeployTask:
    return DeployTask(
        task_id=T1,
        instance_id=I1,
        instance_index=0,
        deployment=TaskDeployment(
            id=D1,
            name="web",
            image="registry.local:5000/web:1",
            command=["sh", "-c", "httpd -f"],
            env={"PORT": "8080"},
            templates=[TaskTemplate(content="port={{ env.PORT }}\n", destination="/etc/a.conf")],
            ports=[TaskPort(container_port=80, host_port=8080, protocol="tcp")],
            network_attachments=[NetworkAttachment(name="backend", subnet="10.9.0.0/24")],
            restart_policy=TaskRestartPolicy(mode="on-failure", max_restarts=3),
            resources=TaskResources(cpu=0.5, memory=256 * 2**20),
        ),
        credentials=SealedCredentials(
            server="registry.local:5000", username="u", sealed_password="s1.abc"
        ),
    )


# --- subjects ------------------------------------------------------------------------------


def test_subjects_are_the_specs() -> None:
    assert subjects.HEARTBEAT == "knit.agent.heartbeat"
    assert subjects.TASKS_BROADCAST == "knit.tasks.broadcast"
    assert subjects.TASK_STATUS == "knit.task.status"
    assert subjects.tasks_for("node-123") == "knit.tasks.node-123"
    assert subjects.BROADCAST_QUEUE


@pytest.mark.parametrize("node_id", ["", "a.b", "*", ">", "a b", "broadcast"])
def test_a_node_id_must_be_one_subject_token(node_id: str) -> None:
    with pytest.raises(ValueError):
        subjects.tasks_for(node_id)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        heartbeat(),
        deploy_task(),
        StopTask(task_id=T2, instance_id=I1, container_id="c1", remove=False),
        TaskStatus(
            task_id="t1",
            instance_id="i1",
            node_id="n1",
            state="failed",
            step="pull",
            error="x",
            at=1.0,
        ),
    ],
    ids=["heartbeat", "deploy", "stop", "status"],
)
def test_every_message_round_trips(message: Heartbeat | DeployTask | StopTask | TaskStatus) -> None:
    data = encode(message)
    assert isinstance(data, bytes)
    assert decode(data) == message
    body = json.loads(data)
    assert body["v"] == SCHEMA_VERSION == 1
    assert len(body["msg_id"]) == 32


def test_specific_decoders_return_their_type() -> None:
    hb = heartbeat()
    assert decode_heartbeat(encode(hb)) == hb
    task = deploy_task()
    decoded = decode_task(encode(task))
    assert isinstance(decoded, DeployTask) and decoded == task
    stop = StopTask(task_id=T1, instance_id=I1)
    assert decode_task(encode(stop)) == stop
    status = TaskStatus(task_id="t", instance_id="i", node_id="n", state="accepted", at=2.0)
    assert decode_status(encode(status)) == status


def test_each_message_has_a_fresh_id() -> None:
    assert heartbeat().msg_id != heartbeat().msg_id


def test_messages_are_immutable() -> None:
    with pytest.raises(pydantic.ValidationError):
        heartbeat().seq = 3


def test_sealed_password_stays_out_of_repr() -> None:
    assert "s1.abc" not in repr(deploy_task())


# --- rejection -----------------------------------------------------------------------------


def test_a_future_version_is_refused_clearly() -> None:
    body = json.loads(encode(heartbeat()))
    body["v"] = 2
    body["something_new"] = {"x": 1}
    with pytest.raises(UnsupportedVersion) as info:
        decode_heartbeat(json.dumps(body).encode())
    assert info.value.version == 2
    assert "version 2" in str(info.value) and "v1" in str(info.value)
    assert isinstance(info.value, WireError) and isinstance(info.value, KnitError)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 1, "kind": "heartbeat"}', "node_id"),
        (b'{"v": 1, "kind": "gossip"}', "kind"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_payloads_raise_wire_error(payload: bytes, words: str) -> None:
    with pytest.raises(WireError) as info:
        decode_heartbeat(payload)
    assert words in str(info.value)


def test_a_task_decoder_refuses_other_kinds() -> None:
    with pytest.raises(WireError, match="'heartbeat' is not a task"):
        decode_task(encode(heartbeat()))


def test_types_are_not_coerced_on_decode() -> None:
    body = json.loads(encode(heartbeat()))
    body["seq"] = "3"
    with pytest.raises(WireError) as info:
        decode_heartbeat(json.dumps(body))
    assert info.value.problems[0]["field"] == "seq"


@pytest.mark.parametrize("key", ["not base64!", base64.b64encode(b"short").decode()])
def test_heartbeat_public_key_must_be_32_bytes_of_base64(key: str) -> None:
    body = json.loads(encode(heartbeat()))
    body["public_key"] = key
    with pytest.raises(WireError, match="public_key"):
        decode_heartbeat(json.dumps(body))


def test_unknown_fields_of_the_same_version_are_ignored() -> None:
    body = json.loads(encode(heartbeat()))
    body["gpu_count"] = 2
    assert decode_heartbeat(json.dumps(body)).node_id == "0f1e2d3c"


def test_a_heartbeat_without_full_or_removed_is_a_full_one() -> None:
    body = json.loads(encode(heartbeat()))
    del body["full"], body["removed"]
    old = decode_heartbeat(json.dumps(body))
    assert (old.full, old.removed, len(old.instances)) == (True, [], 2)


def test_only_a_heartbeat_of_differences_lists_removed_instances() -> None:
    differences = heartbeat(first=False, seq=3, full=False, removed=["i1"])
    assert decode_heartbeat(encode(differences)).removed == ["i1"]
    body = json.loads(encode(differences))
    body["full"] = True
    with pytest.raises(WireError, match="removed must be empty in a full heartbeat"):
        decode_heartbeat(json.dumps(body))
    with pytest.raises(pydantic.ValidationError):
        heartbeat(first=False, removed=["i1"])


def test_the_registration_is_a_full_heartbeat() -> None:
    body = json.loads(encode(heartbeat(first=False, full=False)))
    body["first"] = True
    with pytest.raises(WireError, match="registration"):
        decode_heartbeat(json.dumps(body))


def test_report_changed_compares_every_field() -> None:
    base = InstanceReport(instance_id="i", deployment_id="d", container_id="c", status="running")
    assert report_changed(None, base)
    assert not report_changed(base, base)
    assert not report_changed(base, base.model_copy())
    changes: list[dict[str, object]] = [
        {"status": "stopped"},
        {"container_id": None},
        {"exit_code": 0},
        {"error": "x"},
        {"deployment_id": "e"},
    ]
    for change in changes:
        assert report_changed(base, base.model_copy(update=change)), change


def test_bad_status_state_is_refused() -> None:
    body = json.loads(
        encode(TaskStatus(task_id="t", instance_id="i", node_id="n", state="progress", at=0))
    )
    body["state"] = "exploded"
    with pytest.raises(WireError, match="state"):
        decode_status(json.dumps(body))


BAD_IDS = [
    "/",
    "../../etc",
    "/etc/cron.d",
    "",
    ".",
    "a" * 31,
    "a" * 33,
    "A" * 32,
    "a" * 31 + "/",
    "a" * 32 + "\n",
    "0190a6c2-7f3b-7c2e-9d1a-2b3c4d5e6f70",
    "g" * 32,
]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("field", ["task_id", "instance_id"])
def test_a_stop_task_with_an_id_not_made_by_knit_is_undecodable(field: str, bad: str) -> None:
    body = json.loads(encode(StopTask(task_id=T1, instance_id=I1)))
    body[field] = bad
    with pytest.raises(WireError, match=field):
        decode_task(json.dumps(body))


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("path", [("task_id",), ("instance_id",), ("deployment", "id")])
def test_a_deploy_task_with_an_id_not_made_by_knit_is_undecodable(
    path: tuple[str, ...], bad: str
) -> None:
    body = json.loads(encode(deploy_task()))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    with pytest.raises(WireError, match=".".join(path)):
        decode_task(json.dumps(body))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "../web"}, "deployment.name"),
        ({"name": "Web"}, "deployment.name"),
        ({"image": "busybox; rm -rf /"}, "deployment.image"),
        ({"image": ""}, "deployment.image"),
        ({"env": {"A=B": "x"}}, "deployment.env"),
        ({"env": {"A": "x\x00y"}}, "deployment.env"),
        ({"network_attachments": [{"name": "../net"}]}, "deployment.network_attachments.0.name"),
        ({"templates": [{"content": "x", "destination": "etc/x"}]}, "destination"),
        ({"templates": [{"content": "x", "destination": "/etc/../x"}]}, "destination"),
        ({"templates": [{"content": "x", "destination": "/etc/"}]}, "destination"),
    ],
)
def test_a_deploy_task_with_names_unfit_for_paths_or_docker_is_undecodable(
    change: dict[str, object], field: str
) -> None:
    body = json.loads(encode(deploy_task()))
    body["deployment"].update(change)
    with pytest.raises(WireError, match=field.replace(".", "\\.")):
        decode_task(json.dumps(body))


def test_a_stop_task_container_id_is_a_name_not_a_path() -> None:
    body = json.loads(encode(StopTask(task_id=T1, instance_id=I1, container_id="ab" * 32)))
    decoded = decode_task(json.dumps(body))
    assert isinstance(decoded, StopTask) and decoded.container_id == "ab" * 32
    body["container_id"] = "../x"
    with pytest.raises(WireError, match="container_id"):
        decode_task(json.dumps(body))


# --- hypothesis ----------------------------------------------------------------------------

TEXT = st.text(max_size=20)
IDS = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=40)
KNIT_IDS = st.text(alphabet="abcdef0123456789", min_size=32, max_size=32)
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63)
IMAGES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-./:@", min_size=1, max_size=40)
ENV_NAMES = st.text(min_size=1, max_size=20).filter(lambda k: "=" not in k and "\x00" not in k)
NO_NUL = st.text(max_size=20).filter(lambda v: "\x00" not in v)
DESTINATIONS = st.lists(NAMES, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
CONTAINER_IDS = st.text(alphabet="abcdefXYZ0123456789", min_size=1, max_size=64)
SECONDS = st.floats(0, 2e9, allow_nan=False)

reports = st.builds(
    InstanceReport,
    instance_id=IDS,
    deployment_id=IDS,
    container_id=st.none() | TEXT,
    status=st.sampled_from(["pending", "running", "stopped", "error", "lost", "unknown"]),
    error=st.none() | TEXT,
    exit_code=st.none() | st.integers(-(2**31), 2**31),
)
heartbeats = st.builds(
    Heartbeat,
    node_id=IDS,
    hostname=TEXT,
    seq=st.integers(0, 2**40),
    first=st.booleans(),
    capacity=st.builds(Capacity, cpus=st.integers(0, 512), memory_bytes=st.integers(0, 2**50)),
    labels=st.dictionaries(TEXT, TEXT, max_size=4),
    docker_version=TEXT,
    agent_version=TEXT,
    public_key=st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
    interval=st.floats(0.01, 3600),
    instances=st.lists(reports, max_size=5),
    sent_at=SECONDS,
) | st.builds(
    Heartbeat,
    node_id=IDS,
    hostname=TEXT,
    seq=st.integers(1, 2**40),
    capacity=st.builds(Capacity, cpus=st.integers(0, 512), memory_bytes=st.integers(0, 2**50)),
    public_key=st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
    full=st.just(False),
    instances=st.lists(reports, max_size=3),
    removed=st.lists(IDS, max_size=3),
    sent_at=SECONDS,
)
deployments = st.builds(
    TaskDeployment,
    id=KNIT_IDS,
    name=NAMES,
    image=IMAGES,
    command=st.none() | st.lists(TEXT, max_size=3),
    env=st.dictionaries(ENV_NAMES, NO_NUL, max_size=4),
    templates=st.lists(
        st.builds(TaskTemplate, content=st.text(), destination=DESTINATIONS), max_size=2
    ),
    ports=st.lists(
        st.builds(
            TaskPort,
            container_port=st.integers(1, 65535),
            host_port=st.none() | st.integers(1, 65535),
            host_ip=st.none() | st.just("127.0.0.1"),
            protocol=st.sampled_from(["tcp", "udp"]),
        ),
        max_size=2,
    ),
    network_attachments=st.lists(
        st.builds(NetworkAttachment, name=NAMES, driver=st.sampled_from(["bridge", "host"])),
        max_size=2,
    ),
    restart_policy=st.builds(
        TaskRestartPolicy,
        mode=st.sampled_from(["always", "on-failure", "never"]),
        backoff=SECONDS,
        max_restarts=st.none() | st.integers(0, 100),
    ),
)
tasks = st.builds(
    DeployTask,
    task_id=KNIT_IDS,
    instance_id=KNIT_IDS,
    deployment=deployments,
    instance_index=st.integers(0, 10_000),
    credentials=st.none()
    | st.builds(SealedCredentials, server=TEXT, username=TEXT, sealed_password=TEXT),
    attempt=st.integers(1, 10),
) | st.builds(
    StopTask,
    task_id=KNIT_IDS,
    instance_id=KNIT_IDS,
    container_id=st.none() | CONTAINER_IDS,
    remove=st.booleans(),
)
statuses = st.builds(
    TaskStatus,
    task_id=IDS,
    instance_id=IDS,
    node_id=IDS,
    state=st.sampled_from(["accepted", "progress", "succeeded", "failed"]),
    container_id=st.none() | TEXT,
    error=st.none() | TEXT,
    step=st.none() | TEXT,
    at=SECONDS,
)


@settings(max_examples=150, deadline=None)
@given(heartbeats | tasks | statuses)
def test_any_message_round_trips(message: Heartbeat | DeployTask | StopTask | TaskStatus) -> None:
    assert decode(encode(message)) == message


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_wire_error(payload: bytes) -> None:
    for decoder in (decode, decode_heartbeat, decode_task, decode_status):
        with pytest.raises(WireError):
            decoder(payload)


# --- speed ---------------------------------------------------------------------------------


def test_heartbeat_codec_speed() -> None:
    """Heartbeats arrive at ~2,000/s at scale: decoding must stay far below 500 µs each."""
    hb = heartbeat(instances=50)
    data = encode(hb)
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        decode_heartbeat(data)
    decode_us = (time.perf_counter() - started) / rounds * 1e6
    started = time.perf_counter()
    for _ in range(rounds):
        encode(hb)
    encode_us = (time.perf_counter() - started) / rounds * 1e6
    print(
        f"\nheartbeat with 50 instances, {len(data)} bytes: decode {decode_us:.0f} µs, "
        f"encode {encode_us:.0f} µs"
    )
    assert decode_us < 500
