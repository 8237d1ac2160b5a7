"""The overview lists the servers of the database when there are several (over a fake
control plane)."""

from __future__ import annotations

import pytest

from knit.api.ports import JSONDict
from tests.dashboard.fakes import FakeControl
from tests.dashboard.test_resources import page

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


def server(server_id: str, role: str, status: str = "alive", this: bool = False) -> JSONDict:
    return {
        "id": server_id,
        "role": role,
        "status": status,
        "api_url": f"http://{server_id}:8080",
        "version": "0.1.0",
        "started_at": "2026-12-04T22:00:00Z",
        "last_seen": "2026-12-04T22:10:00Z",
        "this": this,
    }


class ServersControl(FakeControl):
    def __init__(self, servers: list[JSONDict]) -> None:
        super().__init__()
        self.servers = servers

    async def list_servers(self) -> list[JSONDict]:
        return self.servers


async def test_the_overview_shows_who_leads_among_several_servers() -> None:
    html = await page(
        ServersControl(
            [
                server("a", "leader"),
                server("b", "follower", this=True),
                server("c", "follower", "gone"),
            ]
        ),
        "/ui/",
    )
    assert html.count("<h2>Servers</h2>") == 1
    title = html[html.index("<title>") : html.index("</title>")]
    assert "Servers" not in title and "Overview" in title
    assert "b <small>(this)</small>" in html
    assert 'class="badge s-leader">leader<' in html and 'class="badge s-gone">gone<' in html


async def test_one_server_shows_no_servers_table() -> None:
    html = await page(ServersControl([server("a", "leader", this=True)]), "/ui/")
    assert "<h2>Servers</h2>" not in html
