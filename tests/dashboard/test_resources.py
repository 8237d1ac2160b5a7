"""The dashboard shows each node's CPU and memory, free in the overview, reserved and free on
the node's page, over a fake control plane."""

from __future__ import annotations

import pytest

from knit.api.app import create_app
from knit.dashboard.present import digest
from tests.dashboard.fakes import SESSIONS, SIGNED_IN, FakeControl, deployment, node

pytestmark = [pytest.mark.unit]

GiB = 2**30


def reserved_node() -> dict[str, object]:
    return node(
        0,
        cpus=8,
        memory_bytes=16 * GiB,
        reserved_cpus=2.5,
        reserved_memory_bytes=4 * GiB,
        free_cpus=5.5,
        free_memory_bytes=12 * GiB,
    )


async def page(control: FakeControl, path: str) -> str:
    response = (
        await create_app(control, sessions=SESSIONS).test_client().get(path, headers=SIGNED_IN)
    )
    assert response.status_code == 200, path
    return await response.get_data(as_text=True)


@pytest.mark.anyio
async def test_the_node_page_shows_reserved_and_free_cpu_and_memory() -> None:
    control = FakeControl(nodes=[reserved_node()])
    html = await page(control, f"/ui/nodes/{control.nodes[0]['id']}")
    assert "8 (2.5 reserved, 5.5 free)" in html
    assert "16.0 GiB (4.0 GiB reserved, 12.0 GiB free)" in html


@pytest.mark.anyio
async def test_the_overview_shows_free_cpu_and_memory_per_node() -> None:
    control = FakeControl(nodes=[reserved_node()])
    html = await page(control, "/ui/")
    assert "cpus free" in html and "memory free" in html
    assert '<td class="num">5.5</td>' in html and '<td class="num">12.0 GiB</td>' in html
    # A node without the fields (an older server's answer) shows its capacity as free.
    bare = await page(FakeControl(nodes=[node(1)]), "/ui/")
    assert bare.count('<td class="num">16.0 GiB</td>') == 2


def test_a_change_of_reservation_changes_the_streamed_view() -> None:
    before = reserved_node()
    after = {**before, "reserved_memory_bytes": 5 * GiB, "free_memory_bytes": 11 * GiB}
    assert digest([before], [], [], None) != digest([after], [], [], None)


@pytest.mark.anyio
async def test_the_deployment_page_shows_its_resources_and_strategy() -> None:
    sized = deployment("web", 2, resources={"cpu": 0.5, "memory": 256 * 2**20}, strategy="binpack")
    control = FakeControl(deployments=[sized])
    html = await page(control, f"/ui/deployments/{sized['id']}")
    assert "cpu 0.5, memory 256.0 MiB per instance" in html and "binpack" in html
    plain = deployment("api", 1)
    html = await page(FakeControl(deployments=[plain]), f"/ui/deployments/{plain['id']}")
    assert "none (no limits, nothing reserved)" in html
