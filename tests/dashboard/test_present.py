"""What the dashboard computes and how fast it renders a big cluster (no services)."""

from __future__ import annotations

import time

import pytest

from knit.api.app import create_app
from knit.dashboard.present import (
    ago,
    count,
    digest,
    human_bytes,
    masked_env,
    paginate,
    parse_page,
    running_by_deployment,
    short,
)
from knit.errors import StoreError
from tests.dashboard.fakes import SESSIONS, SIGNED_IN, big_cluster

pytestmark = [pytest.mark.unit]


def test_env_values_are_replaced_by_a_mask() -> None:
    assert masked_env({"TOKEN": "s3cret", "A": "1"}) == [("A", "•••"), ("TOKEN", "•••")]
    assert masked_env(None) == []


def test_counts_list_every_known_status_then_unexpected_ones() -> None:
    nodes = [{"status": "healthy"}, {"status": "healthy"}]
    instances = [{"status": "running"}, {"status": "weird"}]
    counts = count(nodes, [], instances)
    assert counts.nodes == {"healthy": 2, "unhealthy": 0}
    assert counts.deployments == {"active": 0, "pending": 0, "deleting": 0}
    assert list(counts.instances)[-1] == "weird" and counts.instances["running"] == 1


def test_running_is_counted_per_deployment() -> None:
    instances = [
        {"deployment_id": "a", "status": "running"},
        {"deployment_id": "a", "status": "error"},
        {"deployment_id": "b", "status": "running"},
    ]
    assert running_by_deployment(instances) == {"a": 1, "b": 1}


def test_pages_are_clamped_and_bad_page_numbers_mean_the_first() -> None:
    items = list(range(250))
    page = paginate(items, 99, per_page=100, param="p")
    assert (page.number, page.pages, page.first, page.last) == (3, 3, 201, 250)
    assert paginate([], 1, per_page=100, param="p").partial is False
    assert [parse_page(v) for v in (None, "", "x", "-4", "2")] == [1, 1, 1, 1, 2]


def test_the_digest_ignores_row_order_and_heartbeats_but_not_status() -> None:
    control = big_cluster(20, 3, 4)
    nodes, deployments, instances = control.nodes, control.deployments, control.instances
    base = digest(nodes, deployments, instances, "e1")
    assert digest(nodes[::-1], deployments[::-1], instances[::-1], "e1") == base
    nodes[0]["last_heartbeat"] = "2031-01-01T00:00:00Z"
    assert digest(nodes, deployments, instances, "e1") == base
    assert digest(nodes, deployments, instances, "e2") != base
    instances[3]["status"] = "lost"
    assert digest(nodes, deployments, instances, "e1") != base


def test_formatting_helpers() -> None:
    assert human_bytes(16 << 30) == "16.0 GiB" and human_bytes(512) == "512 B"
    assert human_bytes(None) == "—" and human_bytes(True) == "—"
    assert ago(None) == "never" and ago("not a time") == "not a time"
    now = 1_700_000_000.0
    assert ago("2023-11-14T22:13:10Z", now=now) == "10 s ago"
    assert ago("2023-11-14T21:13:20Z", now=now) == "1.0 h ago"


@pytest.mark.anyio
async def test_pages_of_1000_nodes_and_10000_instances_render_fast_and_paged() -> None:
    control = big_cluster(nodes=1000, deployments=100, replicas=100)
    client = create_app(control, sessions=SESSIONS).test_client()
    await client.get("/ui/", headers=SIGNED_IN)  # compile the templates once
    node_id, deployment_id = control.nodes[5]["id"], control.deployments[5]["id"]
    for path, note in [
        ("/ui/", "Showing nodes 1\u2013100 of 1000."),
        ("/ui/?nodes_page=10&deployments_page=2", "Showing nodes 901\u20131000 of 1000."),
        (f"/ui/deployments/{deployment_id}", ""),
        (f"/ui/nodes/{node_id}", ""),
        ("/ui/events", ""),
    ]:
        started = time.perf_counter()
        response = await client.get(path, headers=SIGNED_IN)
        elapsed = time.perf_counter() - started
        html = await response.get_data(as_text=True)
        assert response.status_code == 200, path
        assert note in html
        assert html.count("<tr>") <= 2 * 100 + 2 + 50, path  # tables are capped
        assert elapsed < 2.0, (path, elapsed)  # ~0.05 s on a quiet machine


@pytest.mark.anyio
async def test_an_unreadable_control_plane_shows_a_503_page() -> None:
    control = big_cluster(2, 1, 1)
    control.fail = StoreError("database is gone")
    app = create_app(control, sessions=SESSIONS)
    response = await app.test_client().get("/ui/", headers=SIGNED_IN)
    assert response.status_code == 503
    html = await response.get_data(as_text=True)
    assert "did not answer" in html and "StoreError" in html
    assert "database is gone" not in html  # internal details stay in the logs


def test_ids_shorten_to_their_beginning_like_the_cli_and_docker() -> None:
    from knit.agent.executor import container_name
    from knit.ids import new_id

    made = [new_id() for _ in range(1000)]  # in a second or two: the time digits shared
    assert len({short(i) for i in made}) == 1000
    assert short(made[0]) == made[0][:12]
    docker = "f" * 12 + "0" * 52
    assert short(docker) == "f" * 12 and short(None) == ""
    assert len({container_name("web", 0, i) for i in made}) == 1000
